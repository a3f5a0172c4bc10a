"""One module per job family; each job is a plain async function of the AppContext (or pool),
idempotent and safe to run twice at once. `workers.broker` turns them into taskiq tasks."""
