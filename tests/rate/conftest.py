"""Fixtures for the rating tests: a study built from real `shicheng predict` files, a live uvicorn server
on loopback, and a throwaway PostgreSQL cluster started from Debian's binaries.

The study: the hand-made held-out cases of tests/helpers/predict_data.py (test-cold, two visits, of
li-shouyang; test-sleep of huang-peizhong), answered by the `gold` and `retrieval` systems through
`predict`, so 6 answers: 4 of li-shouyang, 2 of huang-peizhong.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from shicheng.evaluate.predict import predict
from shicheng.rate.app import create_app
from shicheng.rate.assign import assign
from shicheng.rate.db import Store
from shicheng.rate.study import add_rater, create_study
from tests.helpers import predict_data as data
from tests.serve.support import LiveServer

SYSTEMS = ("gold", "retrieval")
PASSWORD = "secret-pw-1"


@pytest.fixture(scope="session")
def study_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rate-inputs")
    test_path, _ = data.write_cases(root / "data" / "cases", masters=True)
    out = {"cases": test_path}
    for system in SYSTEMS:
        out[system] = root / f"{system}.jsonl"
        predict(system, cases=test_path, out=out[system], progress=False)
    return out


def make_study(store: Store, files: dict[str, Path], raters: dict[str, list[str]], *, k: int = 1,
               repeat_share: float = 0.0, name: str = "pilot") -> None:
    create_study(store, name, cases=files["cases"], predictions=[files[s] for s in SYSTEMS])
    for login, lineage in raters.items():
        add_rater(store, name, login=login, lineage=lineage, password=PASSWORD, credential="主治医师")
    assign(store, name, k=k, seed=0, repeat_share=repeat_share)


@pytest.fixture
def servers():
    started: list[LiveServer] = []

    def start(db) -> LiveServer:
        server = LiveServer(create_app(db)).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def login(base_url: str, user: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
    """A logged-in client and the session's CSRF token (read from the first rating page)."""
    client = httpx.Client(base_url=base_url, timeout=60, follow_redirects=True)
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    resp = client.post("/login", data={"login": user, "password": password, "csrf": token})
    assert resp.status_code == 200, resp.text
    found = re.search(r'data-csrf="([^"]+)"', resp.text) or re.search(r'name="csrf" value="([^"]+)"', resp.text)
    return client, found.group(1)


LEVELS = {"similarity": 5, "theory": 4, "safety": 5, "completeness": 3, "fluency": 4}  # total 50+15+10+5+7.5


# --- a throwaway PostgreSQL cluster ---------------------------------------------------------------------

def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql:// URL of a fresh cluster in a temporary folder, run as a non-root user, stopped at the end."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): install Debian's "
                    "postgresql package (.ci/run does)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            pytest.skip("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
        as_user = ["runuser", "-u", user, "--"]
    folder = Path(tempfile.mkdtemp(prefix="shicheng-pgtest-"))
    datadir = folder / "data"
    if as_user:
        info = pwd.getpwnam(as_user[2])
        os.chown(folder, info.pw_uid, info.pw_gid)
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off", "start")
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*as_user, str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not become ready: " + (folder / "log").read_text())
            time.sleep(0.2)
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "rate")
        yield f"postgresql://postgres@127.0.0.1:{port}/rate"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
