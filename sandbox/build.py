"""Build the sandbox images offline and reproducibly, cached by content.

    python -m sandbox.build [--force] [--verbose] [--only NAME ...] [--list]

1. Base image ``jafar-sandbox/base:<hash>``: ``debootstrap --variant=minbase bookworm DIR``
   then ``tar -C DIR -c . | docker import -``. Its hash covers the whole recipe (suite,
   variant, mirror, package list, the files written into it).
2. Every ``sandbox/images/<name>/Dockerfile``, built with
   ``--build-arg BASE_IMAGE=jafar-sandbox/base:<hash>`` as ``jafar-sandbox/<name>:<hash>``;
   the hash covers every file of the build context (after its ``fetch-vendor.sh`` hook ran,
   so the files the hook fetched count) and the base tag.

An image whose tag already exists is not built again ("cached"). Every image is also tagged
``jafar-sandbox/<name>:latest``. Nothing is pulled: no registry is reachable here; apt inside
builds uses Debian's plain-HTTP mirror, and anything from pip/npm is fetched on the machine by
the image's ``fetch-vendor.sh`` into its build context.

Never copies this machine's CA bundle into an image: the base gets Debian's own
``ca-certificates`` (built inside the chroot from the package), and the build checks that.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SANDBOX_DIR = Path(__file__).resolve().parent
IMAGES_DIR = SANDBOX_DIR / "images"
PREFIX = "jafar-sandbox"
BASE = "base"
LABEL = "org.jafar.sandbox"
HOOK = "fetch-vendor.sh"
LOCK_FILE = Path(tempfile.gettempdir()) / "jafar-sandbox-build.lock"
HASH_LEN = 16
DEBOOTSTRAP_TIMEOUT = 900
BUILD_TIMEOUT = 1800
HOOK_TIMEOUT = 900

# --- the base image recipe: everything here goes into the base hash ----------------------
SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = "http://deb.debian.org/debian"
BASE_INCLUDE: tuple[str, ...] = ("ca-certificates",)
BASE_FILES: dict[str, str] = {
    # plain HTTP Debian sources (apt verifies signatures; the machine's proxy CA is not needed)
    "etc/apt/sources.list": (
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
    ),
    "etc/apt/apt.conf.d/90sandbox": (
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Retries "3";\n'
    ),
    # like the official debian image: do not start services while building images
    # (the host image removes it again, since it boots a real init)
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",
}
BASE_CHANGES: tuple[str, ...] = (
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
    f"LABEL {LABEL}=1",
)
BASE_RECIPE_VERSION = 1


@dataclass(frozen=True)
class BuildResult:
    name: str
    ref: str
    status: str  # "built" | "cached" | "failed"
    seconds: float
    detail: str = ""


class BuildError(RuntimeError):
    pass


Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_names() -> list[str]:
    """The images under sandbox/images (each directory with a Dockerfile), sorted."""
    return sorted(p.parent.name for p in IMAGES_DIR.glob("*/Dockerfile"))


def base_hash() -> str:
    recipe = {
        "version": BASE_RECIPE_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "mirror": MIRROR,
        "include": sorted(BASE_INCLUDE),
        "files": BASE_FILES,
        "changes": list(BASE_CHANGES),
    }
    return _sha256(json.dumps(recipe, sort_keys=True).encode())[:HASH_LEN]


def context_hash(context: Path, base_ref: str) -> str:
    """Hash of every file in ``context`` (path, exec bit, content; symlink targets) + base."""
    h = hashlib.sha256()
    h.update(f"base={base_ref}\0".encode())
    for path in sorted(_walk(context)):
        rel = path.relative_to(context).as_posix()
        if path.is_symlink():
            h.update(f"L {rel}\0{os.readlink(path)}\0".encode())
            continue
        mode = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"F {rel} {mode}\0".encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:HASH_LEN]


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if not name.endswith(".pyc"):
                yield Path(dirpath) / name
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                yield p


def _run(
    argv: list[str],
    *,
    timeout: float,
    verbose: bool,
    stdin: int | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv``; return its output (stdout+stderr); raise BuildError with its tail."""
    if verbose:
        proc = subprocess.run(argv, stdin=stdin, cwd=cwd, env=env, timeout=timeout, check=False)
        out = ""
    else:
        proc = subprocess.run(
            argv,
            stdin=stdin,
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        out = proc.stdout
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-40:])
        raise BuildError(
            f"{argv[0]} {argv[1] if len(argv) > 1 else ''} exited {proc.returncode}\n{tail}"
        )
    return out


def image_exists(ref: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", ref],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        ).returncode
        == 0
    )


def _tag_latest(ref: str) -> None:
    name = ref.rsplit(":", 1)[0]
    subprocess.run(["docker", "tag", ref, f"{name}:latest"], check=True, timeout=60)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time on this machine (tests of several helpers may run at once)."""
    with LOCK_FILE.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pem_blocks(text: str) -> set[str]:
    blocks: set[str] = set()
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if line == "-----BEGIN CERTIFICATE-----":
            current = []
        elif line == "-----END CERTIFICATE-----" and current is not None:
            blocks.add("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def check_ca_bundle(root: Path) -> None:
    """The root's CA bundle must hold only certificates shipped by Debian's package.

    Guards against this machine's proxy CA (which only this machine trusts) leaking into an
    image: every certificate in /etc/ssl/certs/ca-certificates.crt must come from
    /usr/share/ca-certificates, and /usr/local/share/ca-certificates must be empty.
    """
    bundle = _pem_blocks((root / "etc/ssl/certs/ca-certificates.crt").read_text())
    shipped: set[str] = set()
    for crt in (root / "usr/share/ca-certificates").rglob("*.crt"):
        shipped |= _pem_blocks(crt.read_text(errors="replace"))
    local = root / "usr/local/share/ca-certificates"
    extra = [p for p in local.rglob("*") if p.is_file()] if local.exists() else []
    if not bundle or not bundle <= shipped or extra:
        raise BuildError(
            "base image CA bundle holds certificates not shipped by Debian's ca-certificates"
        )


def build_base(*, force: bool, verbose: bool, log: Log) -> BuildResult:
    ref = f"{PREFIX}/{BASE}:{base_hash()}"
    start = time.monotonic()
    if not force and image_exists(ref):
        _tag_latest(ref)
        return BuildResult(BASE, ref, "cached", time.monotonic() - start)
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (run sandbox/setup-engine.sh)")
    log(f"sandbox.build: {BASE}: debootstrap {VARIANT} {SUITE} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="jafar-sandbox-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        _run(
            [
                "debootstrap",
                f"--variant={VARIANT}",
                f"--include={','.join(BASE_INCLUDE)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            timeout=DEBOOTSTRAP_TIMEOUT,
            verbose=verbose,
        )
        check_ca_bundle(root)
        for rel, content in BASE_FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(0o755 if rel.startswith("usr/sbin/") else 0o644)
        # no downloaded .debs or package lists in the image; builds run apt-get update
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        (root / "etc/hostname").write_text("sandbox\n")
        changes = [arg for c in BASE_CHANGES for arg in ("--change", c)]
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."],
            stdout=subprocess.PIPE,
        )
        try:
            _run(
                ["docker", "import", *changes, "-", ref],
                stdin=tar.stdout.fileno() if tar.stdout else None,
                timeout=BUILD_TIMEOUT,
                verbose=False,
            )
        finally:
            if tar.stdout:
                tar.stdout.close()
            if tar.wait(timeout=60) != 0:
                raise BuildError("tar of the debootstrap root failed")
    _tag_latest(ref)
    return BuildResult(BASE, ref, "built", time.monotonic() - start)


def run_hook(context: Path, *, verbose: bool) -> list[str]:
    """Run the context's fetch-vendor.sh; return the one-line notes it left for the log (what
    the image is built without, say) in the file JAFAR_SANDBOX_NOTES names."""
    hook = context / HOOK
    if not hook.exists():
        return []
    with tempfile.NamedTemporaryFile(prefix="jafar-sandbox-notes-", suffix=".txt") as notes:
        env = dict(
            os.environ, JAFAR_SANDBOX_CONTEXT=str(context), JAFAR_SANDBOX_NOTES=notes.name
        )
        _run(["bash", str(hook)], cwd=context, env=env, timeout=HOOK_TIMEOUT, verbose=verbose)
        return [line for line in Path(notes.name).read_text().splitlines() if line.strip()]


def build_image(name: str, base_ref: str, *, force: bool, verbose: bool, log: Log) -> BuildResult:
    context = IMAGES_DIR / name
    start = time.monotonic()
    for note in run_hook(context, verbose=verbose):
        log(f"sandbox.build: {name}: {note}")
    tag = context_hash(context, base_ref)
    ref = f"{PREFIX}/{name}:{tag}"
    if not force and image_exists(ref):
        _tag_latest(ref)
        return BuildResult(name, ref, "cached", time.monotonic() - start)
    log(f"sandbox.build: {name}: building {ref}")
    _run(
        [
            "docker",
            "build",
            "--build-arg",
            f"BASE_IMAGE={base_ref}",
            "--label",
            f"{LABEL}=1",
            "--label",
            f"{LABEL}.image={name}",
            "--tag",
            ref,
            "--tag",
            f"{PREFIX}/{name}:latest",
            str(context),
        ],
        timeout=BUILD_TIMEOUT,
        verbose=verbose,
    )
    return BuildResult(name, ref, "built", time.monotonic() - start)


def build_images(
    force: bool = False,
    *,
    only: Iterable[str] | None = None,
    verbose: bool = False,
    log: Log = _stderr,
) -> list[BuildResult]:
    """Build the base and the images (all, or ``only`` those); one result per image.

    A failing image does not stop the others; raises BuildError at the end naming them.
    """
    names = image_names()
    if only is not None:
        wanted = list(only)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise BuildError(f"unknown sandbox image(s): {', '.join(unknown)}")
        names = [n for n in names if n in wanted]
    results: list[BuildResult] = []
    with _lock():
        base = build_base(force=force, verbose=verbose, log=log)
        results.append(base)
        log(f"sandbox.build: {base.name}: {base.status} {base.ref} ({base.seconds:.1f}s)")
        for name in names:
            try:
                res = build_image(name, base.ref, force=force, verbose=verbose, log=log)
            except (BuildError, subprocess.TimeoutExpired) as exc:
                res = BuildResult(name, "", "failed", 0.0, str(exc))
            results.append(res)
            if res.status == "failed":
                log(f"sandbox.build: {name}: FAILED\n{res.detail}")
            else:
                log(f"sandbox.build: {name}: {res.status} {res.ref} ({res.seconds:.1f}s)")
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        raise BuildError(f"sandbox image build failed: {', '.join(failed)}")
    return results


def build_all(force: bool = False) -> dict[str, str]:
    """Build every sandbox image (cached by content); return name -> image reference.

    The reference is ``jafar-sandbox/<name>:<content hash>`` (``base`` included); each image
    is also tagged ``jafar-sandbox/<name>:latest``.
    """
    return {r.name: r.ref for r in build_images(force)}


def prune_stale(current: dict[str, str], *, log: Log = _stderr) -> list[str]:
    """Remove older content-hash tags of the images in ``current`` (not ``latest``, not
    tags of another form).

    A tag still used by a container is left alone (docker refuses) and reported.
    """
    removed: list[str] = []
    for name, ref in current.items():
        keep = {ref.rsplit(":", 1)[1], "latest", "<none>"}
        tags = subprocess.run(
            ["docker", "images", f"{PREFIX}/{name}", "--format", "{{.Tag}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        # only tags of the content-hash form: tags others made by hand (e.g. `dev`) stay
        stale = {t for t in tags if len(t) == HASH_LEN and set(t) <= set("0123456789abcdef")}
        for tag in sorted(stale - keep):
            old = f"{PREFIX}/{name}:{tag}"
            proc = subprocess.run(
                ["docker", "rmi", old], capture_output=True, text=True, timeout=120, check=False
            )
            if proc.returncode == 0:
                removed.append(old)
                log(f"sandbox.build: removed stale {old}")
            else:
                log(f"sandbox.build: kept stale {old} ({proc.stderr.strip()[:200]})")
    # untagged leftovers of earlier builds (ours only: they carry our label)
    subprocess.run(
        ["docker", "image", "prune", "--force", "--filter", f"label={LABEL}=1"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--verbose", "-v", action="store_true", help="show build output")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build only these images")
    parser.add_argument("--list", action="store_true", help="list the image names and exit")
    parser.add_argument("--json", action="store_true", help="print name -> ref as JSON")
    parser.add_argument(
        "--prune", action="store_true", help="then remove older hash tags of these images"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join([BASE, *image_names()]))
        return 0
    start = time.monotonic()
    try:
        results = build_images(args.force, only=args.only, verbose=args.verbose)
    except BuildError as exc:
        _stderr(f"sandbox.build: {exc}")
        return 1
    if args.prune:
        prune_stale({r.name: r.ref for r in results})
    if args.json:
        print(json.dumps({r.name: r.ref for r in results}, indent=2))
    else:
        for r in results:
            print(f"{r.name:15} {r.status:7} {r.ref}")
        print(f"total {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
