#!/usr/bin/env python3
"""Audit the dependencies for known vulnerabilities: the Python packages of a Python
environment and the Java libraries bundled in MMS's model-server.jar, against OSV (osv.dev).

    python scripts/audit.py [--python .venv/bin/python] [--jar model-server.jar] [--list]

First the inventory: the environment's packages (name==version) and the jar's libraries
(group:artifact:version). Netty's versions come from the jar's io.netty.versions.properties;
the other libraries in the jar carry no version (MMS's build drops their Maven metadata), so
each is known by the sha256 of one of its classes (JAR_FINGERPRINTS, identified by hand). Then
one OSV batch query for all of them (--osv-url or AUDIT_OSV_URL: another OSV-compatible API).

Exit status: 0 every package was checked and has no known vulnerability, or only accepted ones
(ACCEPTED, each with its reason: the README's security section); 1 known vulnerabilities that
are not accepted; 2 the audit could not be done, said in one last line "audit: could not audit:
<reason>" on stderr: OSV unreachable or answering something unexpected, nothing to audit, a
class in the jar of no known library or version (also 2: bad arguments). It never says "no known
vulnerabilities" unless every package was checked. --list prints the inventory only, exit 0.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import one_line

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PYTHON = REPO / ".venv" / "bin" / "python"
OSV_URL = "https://api.osv.dev/v1"
OSV_URL_VARIABLE = "AUDIT_OSV_URL"
OSV_BATCH_LIMIT = 1000  # queries per querybatch request
EXIT_VULNERABLE = 1
EXIT_COULD_NOT_AUDIT = 2

# Known vulnerabilities accepted, by OSV id or alias (CVE-...), each with why: code that this
# container never runs. The README's security section says how each was checked.
_UNREACHABLE = "not reachable here (README: Security): "
ACCEPTED: dict[str, str] = {
    "CVE-2023-34462": _UNREACHABLE + "Netty's SniHandler, TLS only; MMS serves plain HTTP",
    "CVE-2023-44487": _UNREACHABLE + "HTTP/2 rapid reset; MMS's pipeline is HTTP/1.1 only",
    "CVE-2024-47535": _UNREACHABLE + "Netty reading a file on Windows; Linux only here",
    "CVE-2025-25193": _UNREACHABLE + "Netty reading a file on Windows; Linux only here",
    "CVE-2025-24970": _UNREACHABLE + "Netty's SslHandler (native SSL); MMS serves plain HTTP",
    "CVE-2025-55163": _UNREACHABLE + "HTTP/2 (MadeYouReset); MMS's pipeline is HTTP/1.1 only",
    "CVE-2025-58057": _UNREACHABLE + "Netty's decompressing decoders; none in MMS's pipeline",
    "CVE-2025-59419": _UNREACHABLE + "Netty's SMTP codec; MMS speaks no SMTP",
    "CVE-2021-29425": _UNREACHABLE + "commons-io FilenameUtils.normalize; MMS never calls it",
    "CVE-2024-47554": _UNREACHABLE + "commons-io XmlStreamReader; MMS never uses it",
    "CVE-2025-58056": "mitigated (README: Security): a request with Transfer-Encoding is refused "
    "(411) and its connection closed, so no chunked body reaches Netty's chunk parser's consumer",
    "CVE-2024-29025": "mitigated (README: Security): form bodies never reach MMS's "
    "HttpPostRequestDecoder (java/FrontDoor.java hides their Content-Type from MMS)",
}

NETTY = "io.netty"  # versions from META-INF/io.netty.versions.properties
MMS = "multi-model-server"  # MMS's own classes: audited as the PyPI package
# Class-file path prefixes in model-server.jar and the library they belong to (the longest
# prefix wins). A class under none of them fails the audit: a library nobody identified.
JAR_PACKAGES = {
    "io/netty/": NETTY,
    "com/amazonaws/ml/mms/": MMS,
    "software/amazon/ai/mms/servingsdk/": "software.amazon.ai:mms-plugins-sdk",
    "com/google/gson/": "com.google.code.gson:gson",
    "com/lmax/disruptor/": "com.lmax:disruptor",
    "org/apache/commons/io/": "commons-io:commons-io",
    "org/apache/commons/cli/": "commons-cli:commons-cli",
    "org/apache/logging/log4j/": "org.apache.logging.log4j:log4j-api",
    "org/apache/logging/log4j/core/": "org.apache.logging.log4j:log4j-core",
    "org/apache/logging/slf4j/": "org.apache.logging.log4j:log4j-slf4j-impl",
    "org/slf4j/impl/": "org.apache.logging.log4j:log4j-slf4j-impl",
    "org/slf4j/": "org.slf4j:slf4j-api",
}
# The libraries without version metadata in the jar: one class of each, and the version that
# class's sha256 was identified as (multi-model-server 1.1.11's jar: the module-info of gson and
# log4j-api, log4j's DEPENDENCIES files, the entries' dates, MMS's build files). A sha256 not
# here (MMS changed the library) leaves that library's version unknown: the audit fails.
JAR_FINGERPRINTS: dict[str, tuple[str, dict[str, str]]] = {
    "software.amazon.ai:mms-plugins-sdk": (
        "software/amazon/ai/mms/servingsdk/ModelServerEndpoint.class",
        {"c68a827d5a52e755ad891a79750fc87f1b70199d5d70fc2455d99c89cfb7c16c": "1.0.1"},
    ),
    "com.google.code.gson:gson": (
        "com/google/gson/Gson.class",
        {"ce6429665e6e9b8ddcb5a02ca3e845ec525c3854ae3849ffb18a411892ba9f8e": "2.8.9"},
    ),
    "com.lmax:disruptor": (
        "com/lmax/disruptor/RingBuffer.class",
        {"f6bf4ca1760e47ff847065bd9d64fa9356e28ec032a25567ad0957bd8429f651": "3.4.4"},
    ),
    "commons-io:commons-io": (
        "org/apache/commons/io/IOUtils.class",
        {"c6c20300866fa753b631bb29b140efc29cccde99a9723d55c26023f3ed01fccb": "2.6"},
    ),
    "commons-cli:commons-cli": (
        "org/apache/commons/cli/Options.class",
        {"f2e60873efcd4c4f6353f3af28d05e359fa4639ee2ad6973a33494c8a8117f19": "1.3.1"},
    ),
    "org.apache.logging.log4j:log4j-api": (
        "org/apache/logging/log4j/LogManager.class",
        {"6624b8383352ee838c12b281677bbc1be0c209334a2b585e9018b2b091cc9dfe": "2.17.1"},
    ),
    "org.apache.logging.log4j:log4j-core": (
        "org/apache/logging/log4j/core/LoggerContext.class",
        {"e3d893908ed9aead31b5f4e7e5d8cebc9239a283d02a549bafca126a4324acd7": "2.17.1"},
    ),
    "org.apache.logging.log4j:log4j-slf4j-impl": (
        "org/apache/logging/slf4j/Log4jLogger.class",
        {"bb72afe98cacf02c9b912878063062f50cf63d1c0c347d62ff810ce89e41e266": "2.17.1"},
    ),
    "org.slf4j:slf4j-api": (
        "org/slf4j/LoggerFactory.class",
        {"f3e4ec89046aea1abb063ab6f8b7f66fe83e8e45cd4e64a8bb099a0cf2c6675a": "1.7.32"},
    ),
}

# Run by the audited Python: its installed distributions, and where its MMS jar is (found
# without importing mms).
_INVENTORY_CODE = """
import importlib.metadata, importlib.util, json, pathlib
packages = {}
for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if not name:
        continue
    direct = dist.read_text("direct_url.json")
    local = bool(direct) and "dir_info" in json.loads(direct)
    packages.setdefault(name, [name, dist.version, local])
spec = importlib.util.find_spec("mms")
jar = None
if spec is not None and spec.origin:
    jar = str(pathlib.Path(spec.origin).parent / "frontend" / "model-server.jar")
print(json.dumps({"packages": sorted(packages.values()), "jar": jar}))
"""


class CouldNotAudit(Exception):
    """The audit cannot be completed; the message says why, in one line."""


@dataclass(frozen=True, order=True)
class Package:
    ecosystem: str  # OSV's: "PyPI" or "Maven"
    name: str  # a PyPI name, or Maven's group:artifact
    version: str

    def __str__(self) -> str:
        separator = "==" if self.ecosystem == "PyPI" else ":"
        return f"{self.name}{separator}{self.version}"


@dataclass(frozen=True)
class Vulnerability:
    id: str
    aliases: tuple[str, ...]
    summary: str

    def accepted(self) -> str | None:
        """Why it is accepted, or None."""
        for name in (self.id, *self.aliases):
            if name in ACCEPTED:
                return ACCEPTED[name]
        return None


@dataclass
class Inventory:
    python: list[Package]
    local: list[str]  # installed from a local folder (this project): no advisory database has it
    jar: Path | None
    java: list[Package]
    problems: list[str]  # what could not be inventoried


def python_inventory(python: Path) -> tuple[list[Package], list[str], Path | None]:
    """The packages installed for ``python``, the local ones' names, and its MMS jar."""
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", _INVENTORY_CODE],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CouldNotAudit(f"cannot run {python}: {one_line(error)}") from error
    if done.returncode != 0:
        raise CouldNotAudit(f"{python} could not list its packages: {one_line(done.stderr)}")
    try:
        found = json.loads(done.stdout)
        listed = [
            (str(name), str(version), bool(local)) for name, version, local in found["packages"]
        ]
        jar = Path(found["jar"]) if found["jar"] else None
    except (ValueError, TypeError, KeyError) as error:
        raise CouldNotAudit(
            f"{python} listed its packages unreadably: {one_line(error)}"
        ) from error
    packages = [
        Package("PyPI", _canonical(name), version) for name, version, local in listed if not local
    ]
    local = [_canonical(name) for name, _, is_local in listed if is_local]
    return packages, local, jar


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def jar_inventory(jar: Path) -> tuple[list[Package], list[str]]:
    """The Java libraries bundled in ``jar``, and what could not be identified in it."""
    problems: list[str] = []
    try:
        archive = zipfile.ZipFile(jar)
    except (OSError, zipfile.BadZipFile) as error:
        raise CouldNotAudit(f"cannot read {jar}: {one_line(error)}") from error
    with archive:
        # A fat jar may hold one name several times (Netty's properties, once per module).
        entries = archive.infolist()
        libraries: set[str] = set()
        strangers: set[str] = set()
        for entry in entries:
            name = re.sub(r"^META-INF/versions/\d+/", "", entry.filename)
            if not name.endswith(".class") or name == "module-info.class":
                continue
            owner = _owner(name)
            if owner is None:
                strangers.add(name.rsplit("/", 1)[0] + "/")
            else:
                libraries.add(owner)
        if strangers:
            problems.append(
                f"{jar} has classes of no known library, under {', '.join(sorted(strangers))}: "
                "identify them in JAR_PACKAGES and JAR_FINGERPRINTS (scripts/audit.py)"
            )
        packages: list[Package] = []
        if NETTY in libraries:
            packages += _netty(archive, entries, jar, problems)
        for library in sorted(libraries - {NETTY, MMS}):
            version = _fingerprinted_version(archive, library, jar, problems)
            if version is not None:
                packages.append(Package("Maven", library, version))
    return sorted(packages), problems


def _owner(class_path: str) -> str | None:
    matches = [prefix for prefix in JAR_PACKAGES if class_path.startswith(prefix)]
    return JAR_PACKAGES[max(matches, key=len)] if matches else None


def _netty(
    archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], jar: Path, problems: list[str]
) -> list[Package]:
    versions: dict[str, str] = {}
    for entry in entries:
        if entry.filename != "META-INF/io.netty.versions.properties":
            continue
        for line in archive.read(entry).decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            if key.endswith(".version") and value.strip():
                versions[key.removesuffix(".version").strip()] = value.strip()
    if not versions:
        problems.append(f"{jar} has Netty's classes but no io.netty.versions.properties")
    return [Package("Maven", f"io.netty:{module}", version) for module, version in versions.items()]


def _fingerprinted_version(
    archive: zipfile.ZipFile, library: str, jar: Path, problems: list[str]
) -> str | None:
    marker, known = JAR_FINGERPRINTS.get(library, ("", {}))
    try:
        digest = hashlib.sha256(archive.read(marker)).hexdigest() if marker else ""
    except KeyError:
        digest = ""
    if digest in known:
        return known[digest]
    what = f"{marker} has sha256 {digest}" if digest else "no class of it is fingerprinted"
    problems.append(
        f"the version of {library} in {jar} is unknown ({what}): identify it and add it to "
        "JAR_FINGERPRINTS (scripts/audit.py)"
    )
    return None


def inventory(python: Path, jar: Path | None) -> Inventory:
    packages, local, found_jar = python_inventory(python)
    problems: list[str] = []
    if not packages:
        problems.append(f"found no Python packages installed for {python}")
    jar = jar or found_jar
    java: list[Package] = []
    if jar is None:
        problems.append(f"{python} has no mms package (multi-model-server): no jar to audit")
    else:
        java, jar_problems = jar_inventory(jar)
        problems += jar_problems
        if not java and not jar_problems:
            problems.append(f"found no Java libraries in {jar}")
    return Inventory(sorted(packages), sorted(local), jar, java, problems)


class Osv:
    """The OSV API: its querybatch (ids per package version) and vulns (one's details)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def vulnerabilities(self, packages: Sequence[Package]) -> dict[Package, list[Vulnerability]]:
        ids = self._ids(packages)
        details = {vuln_id: self._details(vuln_id) for vuln_id in sorted(set().union(*ids))}
        return {
            package: [details[vuln_id] for vuln_id in sorted(found)]
            for package, found in zip(packages, ids, strict=True)
            if found
        }

    def _ids(self, packages: Sequence[Package]) -> list[set[str]]:
        found: list[set[str]] = [set() for _ in packages]
        pending: list[tuple[int, str | None]] = [(index, None) for index in range(len(packages))]
        for _ in range(100):  # pages: OSV splits long answers
            if not pending:
                return found
            next_pending: list[tuple[int, str | None]] = []
            for start in range(0, len(pending), OSV_BATCH_LIMIT):
                batch = pending[start : start + OSV_BATCH_LIMIT]
                queries = [_query(packages[index], token) for index, token in batch]
                answer = self._post("/querybatch", {"queries": queries})
                results = answer.get("results") if isinstance(answer, dict) else None
                if not isinstance(results, list) or len(results) != len(queries):
                    raise self._unexpected("/querybatch", f"not {len(queries)} results")
                for (index, _), result in zip(batch, results, strict=True):
                    vulns = result.get("vulns", []) if isinstance(result, dict) else None
                    if not isinstance(vulns, list) or not all(
                        isinstance(vuln, dict) and isinstance(vuln.get("id"), str) for vuln in vulns
                    ):
                        raise self._unexpected("/querybatch", f"a result of {result!r:.80}")
                    found[index].update(vuln["id"] for vuln in vulns)
                    token = result.get("next_page_token")
                    if token:
                        next_pending.append((index, str(token)))
            pending = next_pending
        raise self._unexpected("/querybatch", "pages without end")

    def _details(self, vuln_id: str) -> Vulnerability:
        path = "/vulns/" + urllib.parse.quote(vuln_id, safe="")
        answer = self._request(path, None)
        if not isinstance(answer, dict) or answer.get("id") != vuln_id:
            raise self._unexpected(path, f"{answer!r:.80}")
        aliases = answer.get("aliases") or []
        summary = answer.get("summary") or answer.get("details") or ""
        if not isinstance(aliases, list) or not isinstance(summary, str):
            raise self._unexpected(path, "aliases or summary of the wrong type")
        return Vulnerability(vuln_id, tuple(sorted(map(str, aliases))), one_line(summary, 120))

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request(path, json.dumps(body).encode())

    def _request(self, path: str, body: bytes | None) -> Any:
        url = self.url + path
        request = urllib.request.Request(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "audit.py"},
            method="POST" if body is not None else "GET",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise CouldNotAudit(f"OSV ({url}) answered HTTP {error.code}") from error
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise CouldNotAudit(f"OSV ({url}) is unreachable: {one_line(reason)}") from error
        try:
            return json.loads(raw)
        except ValueError as error:
            raise self._unexpected(path, f"not JSON: {raw[:60]!r}") from error

    def _unexpected(self, path: str, what: str) -> CouldNotAudit:
        return CouldNotAudit(f"OSV ({self.url}{path}) answered something unexpected: {what}")


def _query(package: Package, page_token: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {
        "package": {"name": package.name, "ecosystem": package.ecosystem},
        "version": package.version,
    }
    if page_token:
        query["page_token"] = page_token
    return query


def print_inventory(found: Inventory, python: Path) -> None:
    print(f"Python packages of {python}: {len(found.python)}")
    for package in found.python:
        print(f"  {package}")
    for name in found.local:
        print(f"  {name} (installed from a local folder: in no advisory database, not queried)")
    print(f"Java libraries in {found.jar}: {len(found.java)}")
    for package in found.java:
        print(f"  {package}")
    if found.jar is not None:
        print(f"  (and MMS's own classes: audited as the PyPI package {MMS})")


def report(found: dict[Package, list[Vulnerability]]) -> tuple[int, int]:
    """Print each known vulnerability; return how many there are and how many not accepted."""
    total: set[str] = set()
    open_ids: set[str] = set()
    for package, vulns in sorted(found.items()):
        for vuln in vulns:
            total.add(vuln.id)
            aliases = f" ({', '.join(vuln.aliases)})" if vuln.aliases else ""
            print(f"  {package}: {vuln.id}{aliases} {vuln.summary}")
            reason = vuln.accepted()
            if reason is None:
                open_ids.add(vuln.id)
            else:
                print(f"      accepted: {reason}")
    return len(total), len(open_ids)


def audit(python: Path, jar: Path | None, osv_url: str, timeout: float, list_only: bool) -> int:
    found = inventory(python, jar)
    print_inventory(found, python)
    if list_only:
        print("(inventory only: not audited)")
        return 0
    packages = found.python + found.java
    if not packages:
        raise CouldNotAudit("; ".join(found.problems) or "nothing to audit")
    vulnerabilities = Osv(osv_url, timeout).vulnerabilities(packages)
    print(f"Known vulnerabilities (OSV, {osv_url}) of the {len(packages)} packages:")
    total, not_accepted = report(vulnerabilities)
    if found.problems:
        raise CouldNotAudit("; ".join(found.problems))
    if not_accepted:
        print(
            f"audit: {len(packages)} packages checked: {total} known vulnerabilities, "
            f"{not_accepted} of them not accepted"
        )
        return EXIT_VULNERABLE
    if total:
        print(
            f"audit: all {len(packages)} packages checked: no known vulnerabilities beyond the "
            f"{total} accepted in scripts/audit.py (README: Security)"
        )
    else:
        print(f"audit: all {len(packages)} packages checked: no known vulnerabilities")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", type=Path, default=DEFAULT_PYTHON, help="the environment's Python"
    )
    parser.add_argument("--jar", type=Path, help="MMS's jar (default: the environment's MMS's)")
    parser.add_argument(
        "--osv-url",
        default=os.environ.get(OSV_URL_VARIABLE) or OSV_URL,
        help=f"the OSV API (default: ${OSV_URL_VARIABLE}, else {OSV_URL})",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per OSV request")
    parser.add_argument("--list", action="store_true", help="print the inventory only")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        return audit(args.python, args.jar, args.osv_url, args.timeout, args.list)
    except CouldNotAudit as error:
        sys.stdout.flush()
        print(f"audit: could not audit: {one_line(error, 1000)}", file=sys.stderr)
        return EXIT_COULD_NOT_AUDIT


if __name__ == "__main__":
    sys.exit(main())
