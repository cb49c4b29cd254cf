"""A password in the storage URL is never printed, stored or shown in the report.

Before: the study row kept the command line and the resolved config with the URL as typed, and
`--dry-run` printed it. The test server trusts every login, so a password can be given for real.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import sqlalchemy as sa
from conftest import REPO

from study.store import Store

SECRET = "s3cr3t-" + uuid.uuid4().hex[:8]


def test_the_storage_password_appears_nowhere(postgres_admin_url, tmp_path):
    name = f"bootstudy_secret_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = sa.make_url(postgres_admin_url).set(database=name, password=SECRET)
        url = url.render_as_string(hide_password=False)
        args = [sys.executable, str(REPO / "run_study.py"), "--space", "data_fraction",
                "--preset", "smoke", "--storage", url, "--results-dir", str(tmp_path),
                "--trials", "1", "--epochs", "1", "--final-seeds", "0",
                "--arm", "mode=vit", "--arm", "data_fraction=0.02",
                "--study", "secret"]  # fmt: skip
        dry = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, cwd=REPO)
        assert dry.returncode == 0 and "***" in dry.stdout, dry.stderr
        done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        for text in (dry.stdout, dry.stderr, done.stdout, done.stderr):
            assert SECRET not in text
        with Store(url) as store:
            study = store.get_study("secret")
            assert SECRET not in study.command and SECRET not in str(study.config)
            assert SECRET not in store.trials_frame("secret").to_json(date_format="iso")
        reports = list((tmp_path / "reports").glob("*"))
        assert reports and all(SECRET not in p.read_text() for p in reports)
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
