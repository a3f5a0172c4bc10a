"""Fixtures for the native-extension tests: keys in every accepted format."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@dataclass(frozen=True)
class KeySet:
    """Signing and verifying material for one algorithm."""

    alg: str
    private_pem: str  # PKCS#8 (RSA: also see rsa_pkcs1_private)
    public_pem: str  # SPKI
    extra_private: tuple[str, ...] = ()  # other accepted private encodings
    extra_public: tuple[str, ...] = ()  # other accepted public encodings


def _pem(b: bytes) -> str:
    return b.decode("ascii")


def _rsa_keyset() -> KeySet:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key()
    return KeySet(
        alg="RS256",
        private_pem=_pem(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        ),
        public_pem=_pem(pub.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)),
        extra_private=(
            _pem(
                key.private_bytes(
                    ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()
                )
            ),
        ),
        extra_public=(_pem(pub.public_bytes(ser.Encoding.PEM, ser.PublicFormat.PKCS1)),),
    )


def _ed_keyset() -> KeySet:
    key = ed25519.Ed25519PrivateKey.generate()
    return KeySet(
        alg="EdDSA",
        private_pem=_pem(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        ),
        public_pem=_pem(
            key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
        ),
    )


HS_SECRET = "storefront-test-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def rsa_keys() -> KeySet:
    return _rsa_keyset()


@pytest.fixture(scope="session")
def rsa_keys_other() -> KeySet:
    return _rsa_keyset()


@pytest.fixture(scope="session")
def ed_keys() -> KeySet:
    return _ed_keyset()


@pytest.fixture(scope="session")
def ed_keys_other() -> KeySet:
    return _ed_keyset()


@pytest.fixture(scope="session")
def hs_keys() -> KeySet:
    return KeySet(alg="HS256", private_pem=HS_SECRET, public_pem=HS_SECRET)


@pytest.fixture(scope="session")
def keysets(hs_keys: KeySet, rsa_keys: KeySet, ed_keys: KeySet) -> dict[str, KeySet]:
    return {"HS256": hs_keys, "RS256": rsa_keys, "EdDSA": ed_keys}
