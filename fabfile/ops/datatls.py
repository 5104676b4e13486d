"""The data plane's private CA: TLS between the core services and MongoDB, Redis, PostgreSQL.

`inv tls.data` creates (or, with --rotate, replaces) a CA and a server certificate for the data
host, in the environment's tls_dir beside the gateway's pair. The CA's private key never leaves
this machine: env.sync sends the data host its certificate and key (the key readable only by
the data containers' uid) and every host the CA bundle the clients verify with. A rotation
keeps the previous CA in the bundle, so that clients trust both until the next rotation.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fabfile.config import Environment
from fabfile.errors import BadInput
from fabfile.stackspec import TLS_FILES

CA_DAYS = 3 * 365
SERVER_DAYS = 365
RENEW_BEFORE_DAYS = 30
# what the clients dial: the service names (single topology), loopback (health checks inside
# the containers) and the data host's private address (split topology)
NAMES = ("mongo-primary", "mongo-secondary", "mongo-arbiter", "redis", "postgres-ledger",
         "localhost")


@dataclass(frozen=True)
class Files:
    ca_key: Path       # stays here, mode 0600
    ca_cert: Path
    bundle: Path       # the CA(s) clients trust: the current one, and the previous one
    key: Path          # the data host's key, mode 0600
    cert: Path


def files(env: Environment) -> Files:
    if env.tls_dir is None:
        raise BadInput(f"environment {env.name} has no tls_dir: the data plane's CA lives there")
    d = env.tls_dir
    return Files(d / "data-ca.key", d / "data-ca.crt", d / TLS_FILES["data_ca_crt"][0],
                 d / TLS_FILES["data_tls_key"][0], d / TLS_FILES["data_tls_crt"][0])


def wanted_names(env: Environment) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the data host's certificate must carry."""
    ips = ["127.0.0.1"]
    data = env.data_host.private_address
    if data:
        try:
            ipaddress.ip_address(data)
            ips.append(data)
        except ValueError:
            return [*NAMES, data], ips
    return list(NAMES), ips


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_bytes(data)
    tmp.replace(path)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(env: Environment) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    # a name of its own: during a rotation clients trust two CAs, and a verifier looks the
    # issuer up by name (and by key identifier, added below)
    serial = x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"jafar {env.name} data CA "
                                         f"{now():%Y-%m-%d}"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now() - datetime.timedelta(minutes=5))
            .not_valid_after(now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def new_server(env: Environment, ca_key: ec.EllipticCurvePrivateKey,
               ca: x509.Certificate) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    dns, ips = wanted_names(env)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        f"jafar {env.name} data")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - datetime.timedelta(minutes=5))
            .not_valid_after(now() + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns] +
                [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def server_is_current(env: Environment, cert: x509.Certificate | None, ca: x509.Certificate,
                      renew_before: int = RENEW_BEFORE_DAYS) -> bool:
    """Signed by this CA, names what clients dial, and not about to expire."""
    if cert is None or cert.issuer != ca.subject:
        return False
    if cert.not_valid_after_utc - now() < datetime.timedelta(days=renew_before):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns, ips = wanted_names(env)
    have = (sorted(san.get_values_for_type(x509.DNSName)),
            sorted(str(i) for i in san.get_values_for_type(x509.IPAddress)))
    return have == (sorted(dns), sorted(ips))


def ensure(env: Environment, rotate: bool = False) -> list[str]:
    """Create what is missing or due (and everything with `rotate`); returns what changed."""
    f = files(env)
    done = []
    ca = load_cert(f.ca_cert)
    ca_key = None
    if rotate or ca is None or not f.ca_key.is_file() or \
            ca.not_valid_after_utc - now() < datetime.timedelta(days=RENEW_BEFORE_DAYS):
        previous = ca
        ca_key, ca = new_ca(env)
        write_private(f.ca_key, pem_key(ca_key))
        f.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        trusted = [ca] + ([previous] if previous is not None else [])
        f.bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                      for c in trusted))
        done.append("new data CA" + (" (the previous one stays trusted until the next "
                                     "rotation)" if previous is not None else ""))
    if not f.bundle.is_file():
        f.bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        done.append("CA bundle")
    if done or not f.key.is_file() or not server_is_current(env, load_cert(f.cert), ca):
        if ca_key is None:
            ca_key = serialization.load_pem_private_key(f.ca_key.read_bytes(), None)
        key, cert = new_server(env, ca_key, ca)  # type: ignore[arg-type]
        write_private(f.key, pem_key(key))
        f.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        done.append("new data host certificate")
    return done


def problem(env: Environment) -> str | None:
    """Why the data plane's files cannot be deployed as they are (None: they can)."""
    f = files(env)
    missing = [p.name for p in (f.ca_cert, f.bundle, f.key, f.cert) if not p.is_file()]
    if missing:
        return f"the data plane's TLS files are missing in {env.tls_dir} ({', '.join(missing)})"
    ca, cert = load_cert(f.ca_cert), load_cert(f.cert)
    if ca is None or cert is None:
        return f"the data plane's certificate or CA in {env.tls_dir} is not a PEM certificate"
    if cert.issuer != ca.subject:
        return f"{f.cert} was not issued by {f.ca_cert}"
    if cert.not_valid_after_utc <= now():
        return f"{f.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    dns, ips = wanted_names(env)
    if not server_is_current(env, cert, ca, renew_before=0):
        return f"{f.cert} does not name what the services dial ({', '.join(dns + ips)})"
    return None


def describe(env: Environment) -> str:
    """`data CA until 2029-11-28, data host certificate until 2027-11-29`."""
    f = files(env)
    ca, cert = load_cert(f.ca_cert), load_cert(f.cert)
    return (f"data CA valid until {ca.not_valid_after_utc:%Y-%m-%d}, data host certificate "  # type: ignore[union-attr]
            f"until {cert.not_valid_after_utc:%Y-%m-%d}")  # type: ignore[union-attr]
