"""How each server of the team stack starts: PostgreSQL, the S3 server, MLflow, Prefect (server,
work pool, deployments, worker) and Dask. See :mod:`flows.stack.control`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from flows.stack.base import (
    BUCKET,
    DATABASES,
    HOST,
    MLFLOW_USER,
    PG_BIN,
    PG_USER,
    REPO,
    WORK_POOL,
    Stack,
    port_open,
    process_start_time,
    save_state,
    spawn,
    stack_secrets,
    stop_process,
    wait_until,
)
from tasks.errors import InputError

# --- PostgreSQL --------------------------------------------------------------------------------


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: as root, run them as Debian's postgres user
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_dir(home: Path) -> Path:
    """Where the cluster lives: in the stack's folder, unless root's postgres user cannot reach it there."""
    own = home / "postgres"
    if os.geteuid() != 0:
        return own
    if subprocess.run(_as_postgres(["test", "-x", str(home)]), capture_output=True).returncode == 0:
        return own
    import hashlib

    return Path("/var/lib/postgresql/bce-eval") / hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def start_postgres(stack: Stack) -> None:
    if not (PG_BIN / "initdb").exists():
        raise InputError(
            f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing): run `make stack`, which installs it as root"
        )
    pg = _pg_dir(stack.home)
    # the log beside the cluster: the postgres user may not enter the stack's folder
    data, log = pg / "data", pg / "postgres.log"
    pg.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(pg, "postgres")
    if not (data / "PG_VERSION").exists():
        _init_cluster(stack, pg, data)
    _start_cluster(stack, pg, data, log)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    stack.processes["postgres"] = {"pid": pid, "start": process_start_time(pid) or 0}
    save_state(stack)
    for db in DATABASES:
        exists = _psql(stack, pg, f"SELECT 1 FROM pg_database WHERE datname = '{db}'")
        if exists != "1":
            _psql(stack, pg, f"CREATE DATABASE {db}")


def _init_cluster(stack: Stack, pg: Path, data: Path) -> None:
    """A new cluster in ``data``, its superuser's password read from a file that is removed after."""
    pwfile = pg / "pwfile"
    pwfile.write_text(stack_secrets(stack.home)["postgres"] + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    # local socket connections trust the OS user; TCP (what the servers use) needs the password
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            ]
        ),
        check=True,
        capture_output=True,
    )
    pwfile.unlink()


def _start_cluster(stack: Stack, pg: Path, data: Path, log: Path) -> None:
    """``pg_ctl start``, waiting up to 120 s; a failure names the log and its last line."""
    started = subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "120",
                "start",
                "-o",
                f"-h {HOST} -p {stack.ports.postgres} -k {pg}",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if started.returncode:
        last = (log.read_text(errors="replace").strip().splitlines() or [started.stderr.strip()])[-1]
        raise InputError(f"PostgreSQL did not start on {HOST}:{stack.ports.postgres} (log: {log}): {last}")


def _psql(stack: Stack, pg: Path, sql: str) -> str:
    out = subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "psql"),
                "-h",
                str(pg),
                "-p",
                str(stack.ports.postgres),
                "-U",
                PG_USER,
                "-d",
                "postgres",
                "-tAc",
                sql,
            ]
        ),
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def restart_postgres(stack: Stack) -> None:
    """Stop PostgreSQL (fast shutdown) and start it again, as a host reboot or an upgrade would."""
    stop_process("postgres", stack.processes["postgres"], signal.SIGINT)
    start_postgres(stack)


def _pg_env(stack: Stack) -> dict[str, str]:
    # libpq (psycopg) and asyncpg both read PGPASSWORD: the password stays off every command line
    return {"PGPASSWORD": stack_secrets(stack.home)["postgres"]}


def _pg_url(stack: Stack, db: str, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_USER}@{HOST}:{stack.ports.postgres}/{db}"


# --- the S3-compatible server ------------------------------------------------------------------


def _s3_client(stack: Stack):  # noqa: ANN202 - boto3's client type is generated
    import boto3

    env = stack.client_env()
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_url,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )


def start_s3(stack: Stack, base_env: dict[str, str]) -> None:
    proc = spawn(stack, "s3", [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(stack.ports.s3)], base_env)
    wait_until("S3 server", lambda: port_open(stack.ports.s3), proc, stack.home / "logs" / "s3.log", 60)
    restore_objects(stack)


def save_objects(stack: Stack) -> int:
    """Copy every object of the S3 server into ``home/s3`` (replacing the last copy whole); returns the count."""
    client, target, count = _s3_client(stack), stack.home / "s3", 0
    staging = stack.home / "s3.saving"
    shutil.rmtree(staging, ignore_errors=True)
    for bucket in client.list_buckets().get("Buckets", []):
        (staging / bucket["Name"]).mkdir(parents=True)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for obj in page.get("Contents", []):
                path = staging / bucket["Name"] / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket["Name"], obj["Key"], str(path))
                count += 1
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return count


def restore_objects(stack: Stack) -> int:
    """Put the objects saved in ``home/s3`` back (and make the stack's bucket); returns the count.

    On the first start there is nothing saved: the bucket gets the shipped demo data under
    ``s3://bce-eval/demo``, so the README's command runs as written.
    """
    client, source, count = _s3_client(stack), stack.home / "s3", 0
    if not source.exists():
        for path in sorted((REPO / "data" / "demo").rglob("*.parquet")):
            client.create_bucket(Bucket=BUCKET)
            client.upload_file(str(path), BUCKET, f"demo/{path.relative_to(REPO / 'data' / 'demo').as_posix()}")
    buckets = {b.name for b in source.iterdir() if b.is_dir()} if source.exists() else set()
    for name in sorted(buckets | {BUCKET}):
        client.create_bucket(Bucket=name)
        for path in sorted(p for p in (source / name).rglob("*") if p.is_file()) if name in buckets else []:
            client.upload_file(str(path), name, path.relative_to(source / name).as_posix())
            count += 1
    return count


# --- MLflow, Prefect, Dask ---------------------------------------------------------------------


def start_mlflow(stack: Stack, base_env: dict[str, str]) -> subprocess.Popen:
    conf = stack.home / "mlflow" / "basic_auth.ini"
    conf.parent.mkdir(parents=True, exist_ok=True)
    # no password in the file: MLflow creates the admin from MLFLOW_AUTH_ADMIN_PASSWORD on first start
    # a checked password is remembered for 60 s (per worker): MLflow otherwise hashes it (scrypt) twice
    # per request, ~0.3 s of CPU; a password changed through the API may pass on the other worker until then
    conf.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {_pg_url(stack, 'mlflow_auth')}\nadmin_username = {MLFLOW_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\nauth_cache_ttl_seconds = 60\n"
    )
    s3 = {k: v for k, v in stack.client_env().items() if k.startswith("AWS_")}
    env = {
        **base_env,
        **s3,
        **_pg_env(stack),
        "MLFLOW_AUTH_CONFIG_PATH": str(conf),
        "MLFLOW_S3_ENDPOINT_URL": stack.s3_url,
        "MLFLOW_AUTH_ADMIN_PASSWORD": stack_secrets(stack.home)["mlflow"],
        # the basic-auth app's CSRF key, the same for both workers and across restarts
        "MLFLOW_FLASK_SERVER_SECRET_KEY": stack_secrets(stack.home)["flask"],
    }
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        _pg_url(stack, "mlflow"),
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow",
        "--host",
        HOST,
        "--port",
        str(stack.ports.mlflow),
        "--workers",
        "2",
    ]
    return spawn(stack, "mlflow", cmd, env, cwd=stack.home / "mlflow")


def _prefect_env(stack: Stack, base_env: dict[str, str]) -> dict[str, str]:
    return {
        **base_env,
        "PREFECT_HOME": str(stack.home / "prefect"),
        "PREFECT_API_URL": stack.prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def start_prefect(stack: Stack, base_env: dict[str, str]) -> subprocess.Popen:
    env = {
        **_prefect_env(stack, base_env),
        **_pg_env(stack),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": _pg_url(stack, "prefect", "postgresql+asyncpg"),
    }
    env.pop("PREFECT_API_URL")
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(stack.ports.prefect)]
    return spawn(stack, "prefect", cmd, env)


def deploy(stack: Stack, base_env: dict[str, str]) -> None:
    """The process work pool and every deployment of ``prefect.yaml``."""
    env = {**_prefect_env(stack, base_env), "BCE_EVAL_HOME": str(REPO)}
    for cmd in (
        ["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        ["--no-prompt", "deploy", "--all"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *cmd], env=env, cwd=REPO, capture_output=True, text=True
        )
        if done.returncode:
            log = stack.home / "logs" / "deploy.log"
            log.write_text(done.stdout + done.stderr)
            raise InputError(f"`prefect {' '.join(cmd)}` failed (log: {log})")


def start_worker(stack: Stack, base_env: dict[str, str]) -> subprocess.Popen:
    # the flow runs it starts log to the stack's MLflow and read the stack's bucket
    env = {
        **_prefect_env(stack, base_env),
        **stack.client_env(),
        "BCE_EVAL_HOME": str(REPO),
        "BCE_EVAL_CACHE": str(stack.home / "cache"),
    }
    cmd = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        WORK_POOL,
        "--type",
        "process",
        "--name",
        "bce-eval-worker",
    ]
    return spawn(stack, "worker", cmd, env, cwd=REPO)


def worker_ready(stack: Stack) -> bool:
    import urllib.request

    request = urllib.request.Request(
        f"{stack.prefect_api}/work_pools/{WORK_POOL}/workers/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(json.loads(response.read()))
    except OSError:
        return False


def start_dask(stack: Stack, base_env: dict[str, str]) -> list[subprocess.Popen]:
    env = {**base_env, **stack.client_env()}
    sched = spawn(
        stack,
        "dask-scheduler",
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            HOST,
            "--port",
            str(stack.ports.dask),
            "--dashboard-address",
            f"{HOST}:0",
        ],
        env,
    )
    worker = [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        stack.dask_address,
        "--nthreads",
        "1",
        "--host",
        HOST,
        "--no-dashboard",
    ]
    return [sched, *(spawn(stack, f"dask-worker-{i}", [*worker, "--name", f"w{i}"], env, cwd=REPO) for i in (1, 2))]


def dask_workers(stack: Stack) -> int:
    from distributed import Client

    try:
        with Client(stack.dask_address, timeout=5) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except OSError:
        return 0
