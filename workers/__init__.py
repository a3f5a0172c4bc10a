"""Background work: the taskiq broker, its schedules, and one module per job family."""
