"""Locust suites for the storefront gateway (`make loadtest` runs them headless).

User classes, weighted like a shop's traffic:
- `Browser` (anonymous): product lists with filters and sorts, search, next pages, product pages
  (sometimes revalidated with If-None-Match), categories. Popularity is skewed (Zipf, s=1) over
  the seeded catalog, as real browsing is: a few products and filters take most of the views.
- `Shopper`: registers, sometimes logs in again, looks at products, fills the cart with product
  variants (a size of the sized tenth of the catalog, by `variant_id`; the one variant of the
  rest, by `product_id`), applies the promotion code, checks out with an `Idempotency-Key` (and
  sometimes replays it), pays with the test provider (now and then a declined card first), reads
  orders.
- `Admin` (one): catalog writes (create, reprice, restock a variant, deactivate its own
  products), a category now and then, a partial refund of a paid order, the cached order stats.
- `GrpcBrowser`: ProductService GetProduct / ListProducts over the sync gRPC stubs (gevent-aware),
  firing Locust request events itself.
- `StreamWatcher` (anonymous): product pages left open, each following the stock and price of
  about ten popular products over a live stream (SSE, `GET /api/v1/stream?product_id=...`); a
  new page, so a new stream, every 20-40 s.
Each `Shopper` also keeps its own orders' stream open (`orders=true`, its token as
`access_token`, as a browser's EventSource sends it) from sign-up to the end.

A stream is held in a greenlet of its own (`LiveStream`, on the raw-socket client of
loadtests/sse.py) and measured as request events of type `SSE`: `GET /api/v1/stream` is the time
from connecting to the `ready` message (a refusal, a failed connection, a stream that dies or is
closed by the gateway count as its failures); `stream: product event` (stock.changed,
product.updated) and `stream: order event` (order.*, refund.*) are each message's delay from
the commit that caused it (`sent_at`, stamped by the gateway) to its arrival here.

Request names are the route templates (`GET /api/v1/products/{id}`), which loadtests/targets.toml
budgets. Expected business answers (409 when stock ran out under another shopper) count as
successes; anything else outside 2xx/3xx is a failure.

Environment: `LOADTEST_ADMIN_EMAIL`, `LOADTEST_ADMIN_PASSWORD` (an existing admin),
`LOADTEST_GRPC_TARGET` (`host:port`; without it the gRPC user stops), `LOADTEST_PROMOTION`
(a promotion code; default `LOADTEST10`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import FastHttpUser, User, between, events, task
from locust.env import Environment
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the generated stubs live in server/

from loadtests.harness import CATALOG_SAMPLE
from loadtests.sse import SseStream, StreamEnded
from server.rpc.pb.storefront.v1 import products_pb2, products_pb2_grpc

# grpc's sync calls must yield to Locust's other greenlets; before any channel exists.
grpc_gevent.init_gevent()

API = "/api/v1"
PROMOTION = os.environ.get("LOADTEST_PROMOTION", "LOADTEST10")
SORTS = ("-created", "created", "price", "-price", "name")
WORDS = ("lamp", "kettle", "backpack", "headphones", "jacket", "vintage", "compact", "eco")


class Catalog:
    """What the seeded shop holds, read once at test start (outside the statistics)."""

    product_ids: list[int] = []
    product_weights: list[float] = []
    # product id → its active variants with stock (one for most products, S/M/L for some).
    variants: dict[int, list[int]] = {}
    sized: set[int] = set()  # products with several variants (sizes): lines name the variant
    category_keys: list[str] = []
    list_queries: list[str] = []
    query_weights: list[float] = []

    @classmethod
    def load(cls, host: str) -> None:
        ids: list[int] = []
        cursor: str | None = None
        while len(ids) < CATALOG_SAMPLE:
            query = "limit=100&sort=-created" + (f"&cursor={cursor}" if cursor else "")
            page = _get_json(f"{host}{API}/products?{query}")
            for item in page["items"]:
                if item.get("stock", 0) > 0:
                    ids.append(item["id"])
                    variants = item.get("variants", [])
                    cls.variants[item["id"]] = [v["id"] for v in variants if v["stock"] > 0]
                    if len(variants) > 1:
                        cls.sized.add(item["id"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        categories = _get_json(f"{host}{API}/categories")["items"]
        rng = random.Random(7)
        rng.shuffle(ids)  # popularity should not follow creation order
        cls.product_ids = ids
        cls.product_weights = list(itertools.accumulate(1.0 / r for r in range(1, len(ids) + 1)))
        keys = [c["slug"] for c in categories] + [str(c["id"]) for c in categories[:3]]
        cls.category_keys = keys
        queries = [f"sort={sort}" for sort in SORTS]
        queries += [f"category={key}&sort={rng.choice(SORTS)}" for key in keys]
        queries += [f"category={key}&in_stock=true" for key in keys[:5]]
        queries += [
            "min_price=1000&max_price=5000",
            "max_price=1000&sort=price",
            "min_price=20000&sort=-price",
            "in_stock=true&sort=name",
        ]
        rng.shuffle(queries)
        cls.list_queries = queries
        cls.query_weights = list(itertools.accumulate(1.0 / r for r in range(1, len(queries) + 1)))

    @classmethod
    def popular_product(cls) -> int:
        return random.choices(cls.product_ids, cum_weights=cls.product_weights)[0]

    @classmethod
    def cart_line(cls, product_id: int) -> dict[str, int]:
        """How a shop front names a line: the chosen size of a sized product, else the product."""
        choices = cls.variants.get(product_id, [])
        if product_id in cls.sized and choices:
            # Even when one size alone is left in stock: a product with sizes needs its size.
            return {"variant_id": random.choice(choices)}
        return {"product_id": product_id}

    @classmethod
    def popular_query(cls) -> str:
        return random.choices(cls.list_queries, cum_weights=cls.query_weights)[0]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@events.test_start.add_listener
def _load_catalog(environment: Environment, **_kwargs: Any) -> None:
    if environment.host:
        Catalog.load(environment.host.rstrip("/"))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- live streams ------------------------------------------------------------------------------

STREAM_PATH = f"{API}/stream"
STREAM_OPEN = "GET /api/v1/stream"
# Message topics (`product:<id>`, `order:<user>`) → the request name their delays are budgeted as.
STREAM_EVENTS = {"product": "stream: product event", "order": "stream: order event"}
STREAM_OTHER = "stream: other event"
OPEN_TIMEOUT = 10.0  # connecting, the response head and the `ready` message
# The gateway sends a heartbeat every 15 s: a stream silent for longer than this is dead.
SILENCE_TIMEOUT = 25.0
RETRY_SECONDS = 3.0  # the `retry:` the gateway asks for, as an EventSource would wait


class StreamFailed(Exception):
    """A stream that could not be opened or ended other than as asked."""


def stream_path(products: Sequence[int] = (), *, orders: bool = False, token: str = "") -> str:
    pairs: list[tuple[str, Any]] = [("product_id", p) for p in products]
    if orders:
        pairs.append(("orders", "true"))
    if token:
        pairs.append(("access_token", token))
    return f"{STREAM_PATH}?{urlencode(pairs)}"


class LiveStream:
    """One live stream a simulated user keeps open, in a greenlet of its own (a page's
    EventSource beside the user's clicks). Reopens after RETRY_SECONDS when the stream fails,
    at once when the gateway ends it because its token expired (with the user's current token:
    `path` is asked again on every connect). `stop()` kills the greenlet, which closes the
    socket; a killed stream reports nothing."""

    def __init__(self, user: User, path: Callable[[], str]) -> None:
        self.user = user
        self.path = path
        self._greenlet: gevent.Greenlet[Any, None] | None = None

    def start(self) -> None:
        self.stop()
        self._greenlet = gevent.spawn(self._hold)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=True, timeout=5)

    def _report(self, name: str, millis: float, length: int, error: Exception | None) -> None:
        self.user.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=max(0.0, millis),
            response_length=length,
            exception=error,
            context={},
        )

    def _hold(self) -> None:
        while True:
            stream = self._open()
            if stream is None:
                gevent.sleep(RETRY_SECONDS)
                continue
            try:
                self._read(stream)
            except StreamFailed as exc:
                self._report(STREAM_OPEN, 0.0, 0, exc)  # a failure, not a latency sample
                gevent.sleep(RETRY_SECONDS)
            finally:
                stream.close()

    def _open(self) -> SseStream | None:
        """Connect and wait for `ready`; reports the time it took, or the failure (then None)."""
        started = time.time()
        stream: SseStream | None = None
        try:
            stream = SseStream.open(
                (self.user.host or "").rstrip("/"), self.path(), timeout=OPEN_TIMEOUT
            )
            if stream.status != 200:
                body = stream.read_body(300).decode("utf-8", "replace")
                raise StreamFailed(f"status {stream.status}: {body}")
            ready = stream.next()
            if json.loads(ready).get("type") != "ready":
                raise StreamFailed("the first message was not `ready`")
        except (OSError, StreamEnded, ValueError, StreamFailed) as exc:
            if stream is not None:
                stream.close()
            error = exc if isinstance(exc, StreamFailed) else StreamFailed(f"opening: {exc!r}")
            self._report(STREAM_OPEN, (time.time() - started) * 1000, 0, error)
            return None
        except BaseException:  # killed while opening
            if stream is not None:
                stream.close()
            raise
        took = (stream.received_at - started) * 1000
        self._report(STREAM_OPEN, took, len(stream.head) + len(ready), None)
        stream.settimeout(SILENCE_TIMEOUT)
        return stream

    def _read(self, stream: SseStream) -> None:
        """Report each message's delay until the gateway ends the stream because its token
        expired (returns: reopen with a fresh one); StreamFailed for any other end."""
        while True:
            try:
                payload = stream.next()
                message = json.loads(payload)
            except TimeoutError:
                raise StreamFailed(f"silent for {SILENCE_TIMEOUT:g} s (no heartbeat)") from None
            except (OSError, StreamEnded) as exc:
                raise StreamFailed(f"the stream broke off ({type(exc).__name__})") from None
            except ValueError:
                raise StreamFailed("a message that is not JSON") from None
            if message.get("type") == "closing":
                if message.get("reason") == "expired":
                    return
                raise StreamFailed(f"closed by the gateway ({message.get('reason')})")
            topic = str(message.get("topic", ""))
            name = STREAM_EVENTS.get(topic.partition(":")[0], STREAM_OTHER)
            delay = (stream.received_at - float(message.get("sent_at", 0.0))) * 1000
            self._report(name, delay, len(payload), None)


class Browser(FastHttpUser):
    """Anonymous visitors: most of the traffic, nearly all of it cacheable."""

    weight = 6
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.etags: dict[int, str] = {}

    @task(8)
    def product_page(self) -> None:
        product_id = Catalog.popular_product()
        etag = self.etags.get(product_id)
        if etag is not None and random.random() < 0.3:
            with self.client.get(
                f"{API}/products/{product_id}",
                name="GET /api/v1/products/{id} (304)",
                headers={"If-None-Match": etag},
                catch_response=True,
            ) as reply:
                if reply.status_code in (200, 304):
                    reply.success()
                else:
                    reply.failure(f"status {reply.status_code}")
            return
        with self.client.get(
            f"{API}/products/{product_id}", name="GET /api/v1/products/{id}", catch_response=True
        ) as reply:
            if reply.status_code == 200 and reply.headers.get("ETag"):
                self.etags[product_id] = reply.headers["ETag"]

    @task(4)
    def product_list(self) -> None:
        self.client.get(f"{API}/products", name="GET /api/v1/products")

    @task(4)
    def filtered_list(self) -> None:
        query = Catalog.popular_query()
        with self.client.get(
            f"{API}/products?{query}", name="GET /api/v1/products?filters", catch_response=True
        ) as reply:
            cursor = None
            if reply.status_code == 200:
                try:
                    cursor = reply.json().get("next_cursor")
                except ValueError:
                    reply.failure("the list is not JSON")
        if cursor and random.random() < 0.3:
            # The next page of the same query: cursor pages are the least cacheable read.
            self.client.get(
                f"{API}/products?{query}&cursor={quote(cursor)}", name="GET /api/v1/products?cursor"
            )

    @task(1)
    def search(self) -> None:
        self.client.get(f"{API}/products?q={random.choice(WORDS)}", name="GET /api/v1/products?q")

    @task(2)
    def categories(self) -> None:
        self.client.get(f"{API}/categories", name="GET /api/v1/categories")


class Shopper(FastHttpUser):
    """Signed-in customers going from product pages to a paid-for cart."""

    weight = 3
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.email = f"shopper-{uuid.uuid4().hex[:12]}@loadtest.example.com"
        self.password = "loadtest-password-1"
        reply = self.client.post(
            f"{API}/auth/register",
            name="POST /api/v1/auth/register",
            json={"email": self.email, "password": self.password, "name": "Load Shopper"},
        )
        if reply.status_code != 201:
            raise StopUser()
        self.token: str = reply.json()["access"]
        self.in_cart: set[int] = set()
        # The shop front's live view of the shopper's own orders (created, paid, refunded).
        self.orders_stream = LiveStream(self, lambda: stream_path(orders=True, token=self.token))
        self.orders_stream.start()

    def on_stop(self) -> None:
        stream = getattr(self, "orders_stream", None)
        if stream is not None:
            stream.stop()

    @task(1)
    def login_again(self) -> None:
        reply = self.client.post(
            f"{API}/auth/login",
            name="POST /api/v1/auth/login",
            json={"email": self.email, "password": self.password},
        )
        if reply.status_code == 200:
            self.token = reply.json()["access"]

    @task(2)
    def me(self) -> None:
        self.client.get(f"{API}/auth/me", name="GET /api/v1/auth/me", headers=_bearer(self.token))

    @task(6)
    def look_at_product(self) -> None:
        self.client.get(
            f"{API}/products/{Catalog.popular_product()}", name="GET /api/v1/products/{id}"
        )

    @task(4)
    def add_to_cart(self) -> None:
        product_id = Catalog.popular_product()
        with self.client.post(
            f"{API}/cart/items",
            name="POST /api/v1/cart/items",
            headers=_bearer(self.token),
            catch_response=True,
            json={**Catalog.cart_line(product_id), "quantity": random.randint(1, 2)},
        ) as reply:
            if reply.status_code == 200:
                self.in_cart.add(product_id)
            elif reply.status_code == 409:
                reply.success()  # more than the stock left: a shop's answer, not an error

    @task(3)
    def view_cart(self) -> None:
        self.client.get(f"{API}/cart", name="GET /api/v1/cart", headers=_bearer(self.token))

    @task(1)
    def apply_promotion(self) -> None:
        if self.in_cart:
            self.client.post(
                f"{API}/cart/promotion",
                name="POST /api/v1/cart/promotion",
                headers=_bearer(self.token),
                json={"code": PROMOTION},
            )

    @task(2)
    def checkout(self) -> None:
        if not self.in_cart:
            return
        key = uuid.uuid4().hex
        body = {
            "shipping_address": {
                "name": "Load Shopper",
                "line1": "1 Bench Street",
                "city": "Testville",
                "postal_code": "12345",
                "country": "US",
            },
            "note": "load test",
        }
        headers = {**_bearer(self.token), "Idempotency-Key": key}
        with self.client.post(
            f"{API}/orders",
            name="POST /api/v1/orders",
            headers=headers,
            json=body,
            catch_response=True,
        ) as reply:
            if reply.status_code == 409:
                reply.success()  # another shopper took the last units first
        self.in_cart.clear()
        if reply.status_code == 201:
            self.pay(reply.json()["id"])
        if reply.status_code == 201 and random.random() < 0.2:
            with self.client.post(
                f"{API}/orders",
                name="POST /api/v1/orders (replay)",
                headers=headers,
                json=body,
                catch_response=True,
            ) as replay:
                if replay.headers.get("Idempotent-Replayed") != "true":
                    replay.failure("a replayed Idempotency-Key was not answered from the record")

    def pay(self, order_id: int) -> None:
        """Pay the new order with the test provider; one in ten tries a declined card first."""
        cards = ["tok_declined", "tok_visa"] if random.random() < 0.1 else ["tok_visa"]
        for card in cards:
            with self.client.post(
                f"{API}/orders/{order_id}/payments",
                name="POST /api/v1/orders/{id}/payments",
                headers=_bearer(self.token),
                json={"token": card},
                catch_response=True,
            ) as reply:
                if reply.status_code == 402 and card == "tok_declined":
                    reply.success()  # the declined card the shopper then replaces
                elif reply.status_code == 201 and reply.json().get("status") != "captured":
                    reply.failure("an approved test card did not capture")

    @task(1)
    def my_orders(self) -> None:
        self.client.get(f"{API}/orders", name="GET /api/v1/orders", headers=_bearer(self.token))


class Admin(FastHttpUser):
    """One back-office user editing the catalog, at a back-office pace."""

    fixed_count = 1
    wait_time = between(3.0, 8.0)

    def on_start(self) -> None:
        email, password = (
            os.environ.get("LOADTEST_ADMIN_EMAIL"),
            os.environ.get("LOADTEST_ADMIN_PASSWORD"),
        )
        if not email or not password:
            raise StopUser()
        reply = self.client.post(
            f"{API}/auth/login",
            name="POST /api/v1/auth/login",
            json={"email": email, "password": password},
        )
        if reply.status_code != 200:
            raise StopUser()
        self.headers = _bearer(reply.json()["access"])
        self.mine: list[int] = []

    @task(3)
    def create_product(self) -> None:
        body = {
            "sku": f"LT-{uuid.uuid4().hex[:16]}",
            "name": "Load-test gadget",
            "description": "made by the load test",
            "price": random.randint(100, 90_000),
            "stock": random.randint(10, 500),
        }
        reply = self.client.post(
            f"{API}/products", name="POST /api/v1/products", json=body, headers=self.headers
        )
        if reply.status_code == 201:
            self.mine.append(reply.json()["id"])

    @task(3)
    def reprice(self) -> None:
        if self.mine:
            self.client.patch(
                f"{API}/products/{random.choice(self.mine)}",
                name="PATCH /api/v1/products/{id}",
                headers=self.headers,
                json={"price": random.randint(100, 90_000)},
            )

    @task(1)
    def restock_popular(self) -> None:
        product_id = Catalog.popular_product()
        sizes = Catalog.variants.get(product_id, [])
        if len(sizes) > 1:  # stock is per variant
            self.client.patch(
                f"{API}/products/{product_id}/variants/{random.choice(sizes)}",
                name="PATCH /api/v1/products/{id}/variants/{variant_id}",
                headers=self.headers,
                json={"stock": random.randint(200, 500)},
            )
            return
        self.client.patch(
            f"{API}/products/{product_id}",
            name="PATCH /api/v1/products/{id}",
            headers=self.headers,
            json={"stock": random.randint(200, 500)},
        )

    @task(1)
    def refund_recent(self) -> None:
        """A goodwill partial refund (money only) of a recently paid order."""
        reply = self.client.get(
            f"{API}/orders?status=paid&limit=5", name="GET /api/v1/orders", headers=self.headers
        )
        orders = reply.json().get("items", []) if reply.status_code == 200 else []
        if not orders:
            return
        order = random.choice(orders)
        with self.client.post(
            f"{API}/orders/{order['id']}/refunds",
            name="POST /api/v1/orders/{id}/refunds",
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            json={"amount": max(1, min(100, order["total"] // 10)), "reason": "goodwill"},
            catch_response=True,
        ) as refund:
            if refund.status_code == 409:
                refund.success()  # nothing captured left to give back: a shop's answer

    @task(1)
    def deactivate(self) -> None:
        if len(self.mine) > 3:
            self.client.delete(
                f"{API}/products/{self.mine.pop(0)}",
                name="DELETE /api/v1/products/{id}",
                headers=self.headers,
            )

    @task(1)
    def create_category(self) -> None:
        self.client.post(
            f"{API}/categories",
            name="POST /api/v1/categories",
            headers=self.headers,
            json={"name": f"Load category {uuid.uuid4().hex[:8]}"},
        )

    @task(1)
    def order_stats(self) -> None:
        self.client.get(
            f"{API}/stats/orders", name="GET /api/v1/stats/orders", headers=self.headers
        )


class StreamWatcher(User):
    """Visitors with product pages open: each page follows about ten popular products' stock
    and price live. A task is a page navigation (the old page's stream closes, the new one's
    opens); between them the user only waits, so a phase's end stops it at once."""

    weight = 1
    # A new page every 30 s on average: the default 60-s run's full mix (36 s) reconnects most.
    wait_time = between(20.0, 40.0)
    products_per_page = 10

    def on_start(self) -> None:
        self.stream: LiveStream | None = None

    def on_stop(self) -> None:
        if self.stream is not None:
            self.stream.stop()

    @task
    def open_page(self) -> None:
        products: set[int] = set()
        for _ in range(5 * self.products_per_page):  # Zipf draws repeat the head often
            products.add(Catalog.popular_product())
            if len(products) == self.products_per_page:
                break
        path = stream_path(sorted(products))
        if self.stream is not None:
            self.stream.stop()
        self.stream = LiveStream(self, lambda: path)
        self.stream.start()


class GrpcBrowser(User):
    """Internal callers reading the catalog over gRPC (ProductService)."""

    weight = 1
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        target = os.environ.get("LOADTEST_GRPC_TARGET")
        if not target:
            raise StopUser()
        self.channel = grpc.insecure_channel(target)
        self.stub = products_pb2_grpc.ProductServiceStub(self.channel)

    def on_stop(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()

    def _call(self, name: str, method: Any, message: Any) -> None:
        started = time.perf_counter()
        length, error = 0, None
        try:
            length = method(message, timeout=10).ByteSize()
        except grpc.RpcError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )

    @task(3)
    def get_product(self) -> None:
        self._call(
            "ProductService/GetProduct",
            self.stub.GetProduct,
            products_pb2.GetProductRequest(id=Catalog.popular_product()),
        )

    @task(1)
    def list_products(self) -> None:
        sort = random.choice(SORTS)
        self._call(
            "ProductService/ListProducts",
            self.stub.ListProducts,
            products_pb2.ListProductsRequest(sort=sort),
        )
