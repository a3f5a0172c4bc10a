"""The FastAPI reference `make bench` compares the gateway against.

It serves, from memory, the very JSON the gateway served for one product and one user (captured
by the harness into a fixtures file), and checks the same HS256 access tokens with PyJWT. It is
written the way a careful FastAPI service would be: a path parameter typed `int`, the bearer token
read through a dependency, every endpoint `async def` (nothing goes to the threadpool), bodies
encoded once (the product, as the gateway's cache holds ready bytes) or per request with orjson
(the user, as the gateway encodes it per request).

What it does NOT do, unlike the gateway: rate limiting, Prometheus metrics, request ids, security
headers, a database read for /auth/me. The comparison is therefore the strict one: any of those
costs counts against the gateway.

With `DATABASE_URL` set it also serves `GET /api/v1/products` (category, sort, min_price, limit)
from PostgreSQL through an asyncpg pool, with the gateway's own list function
(server.services.catalog.public_product_page: the view's query, the items from an in-process
product cache): the database cell of `make bench` compares the two frameworks on a read whose
view is never cached, where both wait on the same SQL.

With `REFERENCE_CHECKOUT=1` as well (the harness then runs it in a gateway's environment) it
builds an AppContext of its own in its lifespan from that environment (server.config.load_settings
and workers.broker.build_context_with_jobs, the gateway's pool size and settings, with the
in-process job runner the gateway starts) and serves `POST /api/v1/cart/items` and
`POST /api/v1/orders` through the gateway's service functions (server.services.cart.add_item and
server.services.orders.checkout_cart, Idempotency-Key included): the checkout cell of
`make bench`. The token is checked with PyJWT as for /auth/me; the caller is the token's subject
and role (as the gateway's authenticator, which reads no database either).

Run: `REFERENCE_FIXTURES=fixtures.json uvicorn --factory loadtests.reference.app:create_app_from_env
--loop uvloop --http httptools --no-access-log`.
"""

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Self, cast

import asyncpg
import jwt
import msgspec
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response

from server.cache import Cache
from server.config import load_settings
from server.context import AppContext
from server.db.pool import create_pool
from server.domain.errors import BadRequest, DomainError
from server.domain.principal import ROLES, Principal
from server.http.base import problem, status_of
from server.services import cart, catalog, orders
from server.services.cart import CartItemAdd
from server.services.orders import OrderDetails
from workers.broker import build_context_with_jobs

FIXTURES_ENV = "REFERENCE_FIXTURES"
CHECKOUT_ENV = "REFERENCE_CHECKOUT"
CHECKOUT_PATH = "/api/v1/orders"
PROBLEM = "application/problem+json"
PRIVATE = {"Cache-Control": "private, no-store"}
JSON = "application/json"
PRODUCT_CACHE_CONTROL = "public, max-age=60"


class Fixtures:
    """What the reference serves: JWT settings, product bodies by id, users by id."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.jwt_secret: str = data["jwt_secret"]
        self.jwt_issuer: str = data["jwt_issuer"]
        self.users: dict[int, dict[str, Any]] = {int(k): v for k, v in data["users"].items()}
        # Encoded once, with a strong validator over the bytes, like the gateway's cached bodies.
        self.products: dict[int, tuple[bytes, str]] = {}
        for key, product in data["products"].items():
            body = orjson.dumps(product)
            self.products[int(key)] = (body, '"' + hashlib.sha1(body).hexdigest() + '"')

    @classmethod
    def load(cls, path: Path) -> Self:
        return cls(orjson.loads(path.read_bytes()))


def _problem(error: DomainError, replayed: bool = False) -> Response:
    status = status_of(error)
    headers = {**PRIVATE, "Idempotent-Replayed": "true"} if replayed else PRIVATE
    return Response(
        orjson.dumps(problem(status, error.detail, error.errors)),
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


def create_app(
    fixtures: Fixtures,
    database_url: str | None = None,
    checkout_env: Mapping[str, str] | None = None,
) -> FastAPI:
    pool: asyncpg.Pool | None = None
    ctx: AppContext | None = None
    lists: AppContext | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal pool, ctx
        if database_url:
            pool = await create_pool(database_url, min_size=2, max_size=10)
        jobs = None
        if checkout_env is not None:
            from workers.inprocess import GatewayJobs

            ctx = await build_context_with_jobs(load_settings(checkout_env, dotenv=False))
            # What the gateway starts beside its servers: the broker (checkout enqueues the
            # outbox delivery on it and runs it in-process) and its scheduler.
            jobs = GatewayJobs(ctx)
            await jobs.start()
        yield
        if jobs is not None:
            await jobs.stop()
        if ctx is not None:
            await ctx.close()
        if pool is not None:
            await pool.close()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    unauthorized = {"WWW-Authenticate": "Bearer"}

    def access_claims(authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "authentication required", headers=unauthorized)
        try:
            claims = jwt.decode(
                token.strip(),
                fixtures.jwt_secret,
                algorithms=["HS256"],
                issuer=fixtures.jwt_issuer,
                leeway=5,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.InvalidTokenError as exc:
            raise HTTPException(401, f"invalid access token: {exc}", headers=unauthorized) from None
        return claims

    async def current_user(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        claims = access_claims(authorization)
        sub = claims.get("sub")
        if claims.get("typ") != "access" or not isinstance(sub, str) or not sub.isdigit():
            raise HTTPException(401, "invalid access token", headers=unauthorized)
        user = fixtures.users.get(int(sub))
        if user is None:
            raise HTTPException(401, "this account no longer exists", headers=unauthorized)
        return user

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/api/v1/products/{product_id}")
    async def get_product(product_id: int, request: Request) -> Response:
        found = fixtures.products.get(product_id)
        if found is None:
            raise HTTPException(404, "no such product")
        body, etag = found
        headers = {"ETag": etag, "Cache-Control": PRODUCT_CACHE_CONTROL}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=JSON, headers=headers)

    @app.get("/api/v1/products")
    async def list_products(
        category: str | None = None,
        sort: str | None = None,
        min_price: int | None = None,
        limit: int | None = None,
    ) -> Response:
        if pool is None:
            raise HTTPException(404, "no database configured")
        query = catalog.ProductQuery(category=category, sort=sort, min_price=min_price, limit=limit)
        try:
            body = await catalog.public_product_page(lists_context(pool), query)
        except BadRequest as exc:
            raise HTTPException(400, exc.detail) from None
        return Response(body, media_type=JSON)

    def lists_context(database: asyncpg.Pool) -> AppContext:
        """What the gateway's public list route runs on: the same service function, so the same
        queries, over an in-process cache like the gateway's in `make bench` (no REDIS_URL)."""
        nonlocal lists
        if ctx is not None:
            return ctx
        if lists is None:
            lists = cast(AppContext, SimpleNamespace(pool=database, cache=Cache(None)))
        return lists

    async def current_principal(
        authorization: Annotated[str | None, Header()] = None,
    ) -> Principal:
        claims = access_claims(authorization)
        sub, role = claims.get("sub"), claims.get("role")
        if claims.get("typ") != "access" or not isinstance(sub, str) or not sub.isdigit():
            raise HTTPException(401, "invalid access token", headers=unauthorized)
        if role not in ROLES:
            raise HTTPException(
                401, "invalid access token: bad subject or role", headers=unauthorized
            )
        return Principal(int(sub), role)

    def context() -> AppContext:
        if ctx is None:
            raise HTTPException(404, "checkout is not configured (REFERENCE_CHECKOUT)")
        return ctx

    @app.post("/api/v1/cart/items")
    async def add_cart_item(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Response:
        app_ctx = context()
        try:
            data = msgspec.json.decode(await request.body() or b"{}", type=CartItemAdd)
        except msgspec.ValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        except msgspec.DecodeError:
            raise HTTPException(400, "the request body is not valid JSON") from None
        try:
            view = await cart.add_item(app_ctx, principal.user_id, data)
        except DomainError as error:
            return _problem(error)
        return Response(msgspec.json.encode(view), media_type=JSON, headers=PRIVATE)

    @app.post(CHECKOUT_PATH)
    async def checkout(
        request: Request,
        principal: Annotated[Principal, Depends(current_principal)],
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        app_ctx = context()
        try:
            details = msgspec.json.decode(await request.body() or b"{}", type=OrderDetails)
        except msgspec.ValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        except msgspec.DecodeError:
            raise HTTPException(400, "the request body is not valid JSON") from None
        try:
            key = orders.idempotency_key(
                idempotency_key, "POST", CHECKOUT_PATH, msgspec.to_builtins(details)
            )
            placement = await orders.checkout_cart(app_ctx, principal, details, key)
        except DomainError as error:
            return _problem(error)
        if placement.error is not None:
            return _problem(placement.error, replayed=True)
        assert placement.order is not None
        headers = dict(PRIVATE)
        if placement.replayed:
            headers["Idempotent-Replayed"] = "true"
        headers["Location"] = f"{CHECKOUT_PATH}/{placement.order.id}"
        return Response(placement.body, status_code=201, media_type=JSON, headers=headers)

    @app.get("/api/v1/auth/me")
    async def me(user: Annotated[dict[str, Any], Depends(current_user)]) -> Response:
        return Response(orjson.dumps(user), media_type=JSON)

    return app


def create_app_from_env() -> FastAPI:
    """uvicorn `--factory` entry point: fixtures from the file named by $REFERENCE_FIXTURES."""
    checkout_env = os.environ if os.environ.get(CHECKOUT_ENV) == "1" else None
    return create_app(
        Fixtures.load(Path(os.environ[FIXTURES_ENV])), os.environ.get("DATABASE_URL"), checkout_env
    )
