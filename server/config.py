"""Typed settings, read once from the environment (and `.env`), validated once.

Profiles are chosen by `STOREFRONT_ENV`: `development` (the default, embedded services),
`testing` (what the test-suite uses) and `production` (refuses unsafe values).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_JWT_SECRET = "dev-insecure-secret-change-me-please-0123456789"
PROFILES = ("development", "production", "testing")
JWT_ALGORITHMS = ("HS256", "RS256", "EdDSA")
PAYMENT_PROVIDERS = ("test", "stripe", "none")
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


class ConfigError(ValueError):
    """A setting is missing, malformed or unsafe for the chosen profile."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A budget such as `100/hour`: `limit` requests per `period` seconds."""

    limit: int
    period: float

    @classmethod
    def parse(cls, name: str, text: str) -> Rate:
        match = _RATE_RE.match(text)
        if not match or int(match.group(1)) < 1:
            raise ConfigError(
                f"{name} must look like '100/hour' (second|minute|hour|day), got {text!r}"
            )
        return cls(int(match.group(1)), _PERIODS[match.group(2)])

    def __str__(self) -> str:
        unit = next(k for k, v in _PERIODS.items() if v == self.period)
        return f"{self.limit}/{unit}"


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "development"
    debug: bool = False
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 50051
    jwt_algorithm: str = "HS256"
    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_private_key: bytes | None = None
    jwt_public_key: bytes | None = None
    jwt_issuer: str = "storefront"
    access_token_ttl: int = 60 * 60
    refresh_token_ttl: int = 7 * 24 * 60 * 60
    rate_limit_enabled: bool = True
    rate_limit_anon: Rate = Rate(100, 3600.0)
    rate_limit_user: Rate = Rate(1000, 3600.0)
    rate_limit_login: Rate = Rate(10, 60.0)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    cors_origins: tuple[str, ...] = ()
    tax_rate_bps: int = 0
    store_currency: str = "USD"
    order_payment_timeout: int = 30 * 60
    low_stock_threshold: int = 5
    smtp_url: str | None = None
    mail_from: str = "storefront@localhost"
    sentry_dsn: str | None = None
    log_level: str = "INFO"
    grpc_reflection: bool = True
    max_body_size: int = 1 << 20
    request_timeout: float = 30.0
    # `storefront worker` / `scheduler` serve their own /metrics here when set (task runs and
    # durations happen in those processes, which a gateway's /metrics cannot show).
    worker_metrics_port: int | None = None
    db_pool_min: int = 2
    db_pool_max: int = 20
    # "test": the built-in provider with deterministic outcomes by card token (the default
    # outside production); "stripe": Stripe's API and signed webhooks; "none": no payments
    # through the gateway (orders are marked paid by an admin or a service).
    payment_provider: str = "test"
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    # Seconds a webhook's signature timestamp may be off (Stripe's own default).
    stripe_webhook_tolerance: int = 300
    # Outbound webhooks: private/loopback targets (allowed outside production), the timeout of
    # one delivery, and how many failures in a row disable a subscription.
    webhook_allow_private: bool = True
    webhook_timeout: float = 10.0
    webhook_max_failures: int = 10
    # Live streams (/api/v1/stream), per gateway process: open connections, and those of one
    # signed-in user (a tab per device, not a script holding thousands).
    stream_max_connections: int = 10_000
    stream_max_per_user: int = 5
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def signing_key(self) -> str | bytes:
        """The key tokens are signed with: the secret for HS256, else the private PEM."""
        if self.jwt_algorithm == "HS256":
            return self.jwt_secret
        assert self.jwt_private_key is not None
        return self.jwt_private_key

    @property
    def verifying_key(self) -> str | bytes:
        if self.jwt_algorithm == "HS256":
            return self.jwt_secret
        assert self.jwt_public_key is not None
        return self.jwt_public_key


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {text!r}")


def _int(name: str, text: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _duration(name: str, text: str) -> int:
    """Seconds, or a number with a unit suffix: `90`, `30m`, `2h`, `1d`."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise ConfigError(f"{name} must be seconds or e.g. '30m', got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit


def _networks(name: str, text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
        )
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _read_key(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Build the settings from `environ` (default: the process environment plus `.env`)."""
    if environ is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(override=False)
        environ = os.environ
    env = environ.get("STOREFRONT_ENV", "development").strip() or "development"
    if env not in PROFILES:
        raise ConfigError(f"STOREFRONT_ENV must be one of {', '.join(PROFILES)}, got {env!r}")

    def get(name: str) -> str | None:
        value = environ.get(name)
        return value if value not in (None, "") else None

    values: dict[str, object] = {"env": env}
    if (v := get("DEBUG")) is not None:
        values["debug"] = _bool("DEBUG", v)
    values["database_url"] = get("DATABASE_URL")
    values["redis_url"] = get("REDIS_URL")
    if (v := get("STOREFRONT_DATA_DIR")) is not None:
        values["data_dir"] = Path(v)
    if (v := get("STOREFRONT_HOST")) is not None:
        values["host"] = v
    algorithm = get("JWT_ALGORITHM") or "HS256"
    if algorithm not in JWT_ALGORITHMS:
        raise ConfigError(f"JWT_ALGORITHM must be one of {', '.join(JWT_ALGORITHMS)}")
    values["jwt_algorithm"] = algorithm
    if (v := get("JWT_SECRET")) is not None:
        values["jwt_secret"] = v
    if algorithm != "HS256":
        private, public = get("JWT_PRIVATE_KEY_FILE"), get("JWT_PUBLIC_KEY_FILE")
        if not private or not public:
            raise ConfigError(
                f"JWT_ALGORITHM={algorithm} needs JWT_PRIVATE_KEY_FILE and JWT_PUBLIC_KEY_FILE"
            )
        values["jwt_private_key"] = _read_key("JWT_PRIVATE_KEY_FILE", private)
        values["jwt_public_key"] = _read_key("JWT_PUBLIC_KEY_FILE", public)
    if (v := get("JWT_ISSUER")) is not None:
        values["jwt_issuer"] = v
    if (v := get("RATE_LIMIT_ENABLED")) is not None:
        values["rate_limit_enabled"] = _bool("RATE_LIMIT_ENABLED", v)
    for name, key in (
        ("RATE_LIMIT_ANON", "rate_limit_anon"),
        ("RATE_LIMIT_USER", "rate_limit_user"),
        ("RATE_LIMIT_LOGIN", "rate_limit_login"),
    ):
        if (v := get(name)) is not None:
            values[key] = Rate.parse(name, v)
    if (v := get("TRUSTED_PROXIES")) is not None:
        values["trusted_proxies"] = _networks("TRUSTED_PROXIES", v)
    if (v := get("CORS_ORIGINS")) is not None:
        values["cors_origins"] = tuple(o.strip() for o in v.split(",") if o.strip())
    if (v := get("TAX_RATE_BPS")) is not None:
        values["tax_rate_bps"] = _int("TAX_RATE_BPS", v, maximum=100_000)
    if (v := get("STORE_CURRENCY")) is not None:
        if not re.fullmatch(r"[A-Z]{3}", v):
            raise ConfigError(f"STORE_CURRENCY must be an ISO 4217 code such as USD, got {v!r}")
        values["store_currency"] = v
    if (v := get("ORDER_PAYMENT_TIMEOUT")) is not None:
        values["order_payment_timeout"] = _duration("ORDER_PAYMENT_TIMEOUT", v)
    if (v := get("LOW_STOCK_THRESHOLD")) is not None:
        values["low_stock_threshold"] = _int("LOW_STOCK_THRESHOLD", v)
    values["smtp_url"] = get("SMTP_URL")
    if (v := get("MAIL_FROM")) is not None:
        values["mail_from"] = v
    values["sentry_dsn"] = get("SENTRY_DSN")
    if (v := get("LOG_LEVEL")) is not None:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {v!r}"
            )
        values["log_level"] = v.upper()
    reflection = get("GRPC_REFLECTION")
    values["grpc_reflection"] = (
        _bool("GRPC_REFLECTION", reflection) if reflection is not None else env != "production"
    )
    if (v := get("MAX_BODY_SIZE")) is not None:
        values["max_body_size"] = _int("MAX_BODY_SIZE", v, minimum=1024)
    if (v := get("WORKER_METRICS_PORT")) is not None:
        values["worker_metrics_port"] = _int("WORKER_METRICS_PORT", v, minimum=1, maximum=65535)
    if (v := get("DB_POOL_MAX")) is not None:
        values["db_pool_max"] = _int("DB_POOL_MAX", v, minimum=1)
    provider = get("PAYMENT_PROVIDER") or ("none" if env == "production" else "test")
    if provider not in PAYMENT_PROVIDERS:
        raise ConfigError(f"PAYMENT_PROVIDER must be one of {', '.join(PAYMENT_PROVIDERS)}")
    values["payment_provider"] = provider
    values["stripe_api_key"] = get("STRIPE_API_KEY")
    values["stripe_webhook_secret"] = get("STRIPE_WEBHOOK_SECRET")
    if (v := get("STRIPE_API_BASE")) is not None:
        values["stripe_api_base"] = v.rstrip("/")
    if (v := get("STRIPE_WEBHOOK_TOLERANCE")) is not None:
        values["stripe_webhook_tolerance"] = _int("STRIPE_WEBHOOK_TOLERANCE", v, minimum=1)
    if provider == "stripe" and not (values["stripe_api_key"] and values["stripe_webhook_secret"]):
        raise ConfigError("PAYMENT_PROVIDER=stripe needs STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET")
    allow_private = get("WEBHOOK_ALLOW_PRIVATE")
    values["webhook_allow_private"] = (
        _bool("WEBHOOK_ALLOW_PRIVATE", allow_private)
        if allow_private is not None
        else env != "production"
    )
    if (v := get("WEBHOOK_TIMEOUT")) is not None:
        values["webhook_timeout"] = float(_int("WEBHOOK_TIMEOUT", v, minimum=1, maximum=60))
    if (v := get("WEBHOOK_MAX_FAILURES")) is not None:
        values["webhook_max_failures"] = _int("WEBHOOK_MAX_FAILURES", v, minimum=1)
    if (v := get("STREAM_MAX_CONNECTIONS")) is not None:
        values["stream_max_connections"] = _int("STREAM_MAX_CONNECTIONS", v, minimum=1)
    if (v := get("STREAM_MAX_PER_USER")) is not None:
        values["stream_max_per_user"] = _int("STREAM_MAX_PER_USER", v, minimum=1)
    settings = Settings(**values)  # type: ignore[arg-type]
    _refuse_unsafe(settings)
    return settings


def _refuse_unsafe(settings: Settings) -> None:
    if not settings.is_production:
        return
    problems = []
    if settings.jwt_algorithm == "HS256" and settings.jwt_secret == DEFAULT_JWT_SECRET:
        problems.append("JWT_SECRET is the built-in development secret; set a random one")
    if settings.jwt_algorithm == "HS256" and len(settings.jwt_secret.encode()) < 32:
        problems.append("JWT_SECRET must be at least 32 bytes")
    if settings.debug:
        problems.append("DEBUG must be off")
    if not settings.database_url:
        problems.append("DATABASE_URL must be set (no embedded database in production)")
    if settings.payment_provider == "test":
        problems.append("PAYMENT_PROVIDER=test approves any test card; use stripe or none")
    if problems:
        raise ConfigError("refusing to start in production: " + "; ".join(problems))
