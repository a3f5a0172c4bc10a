"""Settings: profiles, parsing, and production refusing unsafe values."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import DEFAULT_JWT_SECRET, ConfigError, Rate, load_settings

SAFE_PRODUCTION = {
    "STOREFRONT_ENV": "production",
    "DATABASE_URL": "postgresql://db/storefront",
    "JWT_SECRET": "x" * 48,
}


def test_development_is_the_default_profile_with_embedded_services() -> None:
    settings = load_settings({})
    assert settings.env == "development"
    assert settings.database_url is None and settings.redis_url is None
    assert settings.data_dir == Path(".data")
    assert settings.rate_limit_enabled is True
    assert settings.rate_limit_anon == Rate(100, 3600.0)
    assert settings.rate_limit_user == Rate(1000, 3600.0)
    assert settings.rate_limit_login == Rate(10, 60.0)
    assert settings.store_currency == "USD" and settings.tax_rate_bps == 0
    assert settings.order_payment_timeout == 1800
    assert settings.grpc_reflection is True


def test_every_documented_variable_is_read() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://h/db",
            "REDIS_URL": "redis://h:6379/0",
            "STOREFRONT_DATA_DIR": "/tmp/sf",
            "JWT_SECRET": "s" * 40,
            "RATE_LIMIT_ENABLED": "0",
            "RATE_LIMIT_ANON": "5/minute",
            "RATE_LIMIT_USER": "50/hour",
            "RATE_LIMIT_LOGIN": "3/second",
            "TAX_RATE_BPS": "825",
            "STORE_CURRENCY": "JPY",
            "ORDER_PAYMENT_TIMEOUT": "15m",
            "LOW_STOCK_THRESHOLD": "2",
            "SMTP_URL": "smtp://mail:25",
            "SENTRY_DSN": "https://k@s/1",
            "LOG_LEVEL": "debug",
            "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        }
    )
    assert settings.database_url == "postgresql://h/db"
    assert settings.redis_url == "redis://h:6379/0"
    assert settings.data_dir == Path("/tmp/sf")
    assert settings.rate_limit_enabled is False
    assert settings.rate_limit_anon == Rate(5, 60.0)
    assert settings.rate_limit_login == Rate(3, 1.0)
    assert settings.tax_rate_bps == 825 and settings.store_currency == "JPY"
    assert settings.order_payment_timeout == 900 and settings.low_stock_threshold == 2
    assert settings.smtp_url == "smtp://mail:25" and settings.sentry_dsn == "https://k@s/1"
    assert settings.log_level == "DEBUG"
    assert len(settings.trusted_proxies) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STOREFRONT_ENV", "staging"),
        ("RATE_LIMIT_ANON", "100 per hour"),
        ("RATE_LIMIT_USER", "0/hour"),
        ("TAX_RATE_BPS", "-1"),
        ("TAX_RATE_BPS", "ten"),
        ("STORE_CURRENCY", "usd"),
        ("JWT_ALGORITHM", "none"),
        ("JWT_ALGORITHM", "RS256"),  # without key files
        ("RATE_LIMIT_ENABLED", "maybe"),
        ("LOG_LEVEL", "loud"),
        ("TRUSTED_PROXIES", "not-an-ip"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_production_starts_with_safe_values() -> None:
    settings = load_settings(SAFE_PRODUCTION)
    assert settings.is_production and settings.grpc_reflection is False


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"JWT_SECRET": DEFAULT_JWT_SECRET}, "development secret"),
        ({"JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"DEBUG": "1"}, "DEBUG"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
    ],
)
def test_production_refuses_unsafe_values(override: dict[str, str], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_settings({**SAFE_PRODUCTION, **override})


def test_production_reflection_can_be_turned_on_explicitly() -> None:
    assert load_settings({**SAFE_PRODUCTION, "GRPC_REFLECTION": "1"}).grpc_reflection is True


def test_asymmetric_keys_are_read_from_files(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    private.write_bytes(b"PRIVATE")
    public.write_bytes(b"PUBLIC")
    settings = load_settings(
        {
            "JWT_ALGORITHM": "EdDSA",
            "JWT_PRIVATE_KEY_FILE": str(private),
            "JWT_PUBLIC_KEY_FILE": str(public),
        }
    )
    assert settings.signing_key == b"PRIVATE" and settings.verifying_key == b"PUBLIC"
