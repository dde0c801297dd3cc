"""The lab's own certificate authority: a CA and Redis's server certificate, made here.

Why: a worker on another host reaches Redis over the network, so the link is TLS
(``rediss://``). The lab needs no public CA and no network for that: it makes its own CA
once, signs Redis's certificate with it, and hands out ``ca.crt`` (never a key) to the
worker hosts, which then verify that they talk to *this* Redis::

    python -m workers.infra.tls OUT_DIR --hosts redis,localhost,127.0.0.1,10.77.0.1

    OUT_DIR/ca.crt      the CA certificate: what a worker host gets          0644
    OUT_DIR/ca.key      the CA's private key: stays where it was made        0600
    OUT_DIR/redis.crt   Redis's certificate, signed by the CA, SANs = hosts  0644
    OUT_DIR/redis.key   Redis's private key (group: the redis user reads it) 0640

Run again, it keeps the CA (workers already hold ``ca.crt``) and re-issues the server
certificate only when its names differ from ``--hosts``, it is not the CA's, or it is
near its end. ``ensure(..., keep_covering=True)`` (the lab's join-init, which hands the
certificate's names out in ``join/worker.env``) never drops a name: a certificate that
names every host asked for is kept as it is, with its other names, and one renewed or
completed keeps them all. An IP-looking host becomes an IP SAN, anything else a DNS SAN. Keys are EC
P-256 (fast to make, accepted by OpenSSL 3 and so by Redis 7). Made with the
``cryptography`` package alone: no ``openssl`` command needed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from pathlib import Path

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "redis.crt", "redis.key"
CA_NAME = "taskrace lab CA"
CA_DAYS, SERVER_DAYS = 3650, 825  # 825: the longest a TLS client library still accepts
RENEW_BEFORE = dt.timedelta(days=30)  # re-issue a server certificate this close to its end
_DNS = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
                  r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


class TLSError(ValueError):
    """Bad input or unusable files; the message is one line."""


def parse_hosts(text: str) -> list[str]:
    """``"redis, localhost,127.0.0.1,127.0.0.1"`` -> the names in order, duplicates and
    blanks dropped; TLSError if none is left or one is neither an IP nor a DNS name."""
    hosts: list[str] = []
    for raw in (text or "").split(","):
        host = raw.strip()
        if host and host not in hosts:
            if not (_is_ip(host) or _DNS.match(host)):
                raise TLSError(f"--hosts: {host!r} is neither an IP address nor a DNS name")
            hosts.append(host)
    if not hosts:
        raise TLSError("--hosts is empty: name at least one host the workers reach Redis by")
    return hosts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _san_entries(hosts) -> list:
    from cryptography import x509

    return [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]


def sans(cert) -> set[str]:
    """A certificate's subject alternative names, as ``{"DNS:redis", "IP:127.0.0.1"}``."""
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return ({f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)}
            | {f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)})


def wanted_sans(hosts) -> set[str]:
    return {f"IP:{ipaddress.ip_address(h)}" if _is_ip(h) else f"DNS:{h}" for h in hosts}


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def make_ca(days: int = CA_DAYS):
    """A new self-signed CA: (certificate, private key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue_server_cert(ca_cert, ca_key, hosts, days: int = SERVER_DAYS):
    """A server certificate for ``hosts`` signed by the CA: (certificate, private key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hosts = list(hosts)
    key = _new_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


# files --------------------------------------------------------------------------------
def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes, mode: int) -> None:
    """Atomically, created with ``mode`` (no moment with wider permissions, whatever the
    umask): a temporary file beside it, then rename. Keys here, the aclfile in workers.infra.acl."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _load_ca(out: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = out / CA_CERT, out / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        return None
    if not (cert_path.exists() and key_path.exists()):
        have, missing = (CA_CERT, CA_KEY) if cert_path.exists() else (CA_KEY, CA_CERT)
        raise TLSError(f"{out / have} exists without {out / missing}: remove it to make a new CA "
                       f"(workers then need the new {CA_CERT})")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise TLSError(f"cannot read the CA in {out}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise TLSError(f"{cert_path} and {key_path} do not belong together")
    return cert, key


def _server_cert(out: Path, ca_cert):
    """OUT/redis.crt if it is the CA's and goes with OUT/redis.key (whatever its names and
    end); else None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate((out / SERVER_CERT).read_bytes())
        key = serialization.load_pem_private_key((out / SERVER_KEY).read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # noqa: BLE001 - missing, unreadable, another CA's: issue anew
        return None
    return cert if cert.public_key().public_numbers() == key.public_key().public_numbers() else None


def _fresh(cert) -> bool:
    return cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > RENEW_BEFORE


def _server_cert_ok(out: Path, ca_cert, hosts) -> bool:
    """Is OUT/redis.crt (with its key) the CA's, for exactly these names, not near its end?"""
    cert = _server_cert(out, ca_cert)
    return cert is not None and _fresh(cert) and sans(cert) == wanted_sans(hosts)


def hosts_of(names) -> list[str]:
    """``{"DNS:redis", "IP:127.0.0.1"}`` -> ``["127.0.0.1", "redis"]`` (sorted), what --hosts takes."""
    return sorted(name.split(":", 1)[1] for name in names)


def server_names(out_dir) -> set[str] | None:
    """The names of OUT_DIR's server certificate (``{"DNS:redis", "IP:10.77.0.1", ...}``),
    if there is one the CA there issued, with its key, not near its end; else None (the
    next ``ensure`` issues one)."""
    out = Path(out_dir)
    try:
        ca = _load_ca(out)
    except TLSError:
        return None
    cert = _server_cert(out, ca[0]) if ca is not None else None
    return sans(cert) if cert is not None and _fresh(cert) else None


def ensure(out_dir, hosts, keep_covering: bool = False) -> list[tuple[Path, str]]:
    """Make what is missing in ``out_dir``; returns (path, what) for every file written.
    ``keep_covering``: the server certificate's present names stay (see the module's text)."""
    out = Path(out_dir)
    hosts = parse_hosts(hosts if isinstance(hosts, str) else ",".join(hosts))
    if out.exists() and not out.is_dir():
        raise TLSError(f"{out} is not a directory")
    try:
        out.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise TLSError(f"cannot create {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TLSError(f"cannot write to {out}: not writable (read-only or permission denied)")
    written: list[tuple[Path, str]] = []
    try:
        ca = _load_ca(out)
        if ca is None:
            ca = make_ca()
            write_private(out / CA_KEY, _pem_key(ca[1]), 0o600)
            write_private(out / CA_CERT, _pem_cert(ca[0]), 0o644)
            written += [(out / CA_KEY, "CA private key"),
                        (out / CA_CERT, f"CA certificate {CA_NAME!r}, hand this to worker hosts")]
        old = _server_cert(out, ca[0]) if keep_covering else None
        if old is not None:  # the names asked for, and every other name it has
            hosts = list(dict.fromkeys(hosts + hosts_of(sans(old))))
        if not _server_cert_ok(out, ca[0], hosts):
            cert, key = issue_server_cert(*ca, hosts)
            write_private(out / SERVER_KEY, _pem_key(key), 0o640)
            write_private(out / SERVER_CERT, _pem_cert(cert), 0o644)
            names = ", ".join(sorted(sans(cert)))
            written += [(out / SERVER_KEY, "server private key"),
                        (out / SERVER_CERT, f"server certificate for {names}")]
    except OSError as exc:
        raise TLSError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return written


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, no usage block
        self.exit(2, f"workers.infra.tls: {message}\n")


def main(argv: list[str] | None = None) -> int:
    ap = _OneLineParser(prog="python -m workers.infra.tls",
                        description="Make (or keep) the lab's CA and Redis's TLS certificate.")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="where ca.crt, ca.key, redis.crt, redis.key go")
    ap.add_argument("--hosts", required=True, metavar="H1,H2,...",
                    help="names and addresses workers reach Redis by (the certificate's SANs)")
    args = ap.parse_args(argv)
    try:
        written = ensure(args.out_dir, args.hosts)
    except TLSError as exc:
        print(f"workers.infra.tls: {exc}", file=sys.stderr)
        return 2
    for path, what in written:
        print(f"wrote {path}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
