"""The state database: migrations, stage lifecycle, signatures, the never-submit-twice guard.

Every test that takes ``url`` runs twice: on SQLite and on a real PostgreSQL 16 server started
from the ``pgserver`` wheel (a fresh database per test, driver psycopg 3)."""

from __future__ import annotations

import multiprocessing as mp
import uuid
import warnings
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from offchain.errors import StageError
from offchain.state import db as state_db
from offchain.state.db import current_revision, default_url, head_revision, make_engine, upgrade
from offchain.state.models import Base, RoundStatus, StageStatus, SubmissionStatus
from offchain.state.store import RoundStore

POOL = "0x" + "ab" * 20
SIGNER_A = "0x" + "0a" * 20
SIGNER_B = "0x" + "0b" * 20
DIGEST = "0x" + "11" * 32
SIG_A = "0x" + "aa" * 65
SIG_B = "0x" + "bb" * 65
TX1 = "0x" + "01" * 32
TX2 = "0x" + "02" * 32
TX3 = "0x" + "03" * 32
STAGES = ["prepare", "train", "generate", "sign", "submit"]


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A PostgreSQL server for the session (pgserver: PostgreSQL binaries in a wheel)."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return default_url(tmp_path / "run")
    server = request.getfixturevalue("pg_server")
    name = f"state_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name};")
    return server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engine(url):
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine):
    return RoundStore(engine)


@pytest.fixture
def round_pk(store, tmp_path):
    campaign = store.ensure_campaign(31337, POOL, 1, str(tmp_path / "run"))
    return store.ensure_round(campaign, 1)


def test_upgrade_creates_all_tables_at_head(url):
    assert current_revision(url) is None
    assert upgrade(url) == head_revision()
    assert current_revision(url) == head_revision()
    engine = make_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"campaigns", "rounds", "stage_runs", "signatures", "submissions"} <= tables


def test_upgrade_twice_is_a_noop(url):
    upgrade(url)
    assert upgrade(url) == head_revision()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_migration_matches_the_orm_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_engine_turns_on_foreign_keys_and_wal(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_ensure_campaign_and_round_are_idempotent(store, tmp_path):
    a = store.ensure_campaign(31337, POOL.upper().replace("0X", "0x"), 2**255, str(tmp_path))
    assert store.ensure_campaign(31337, POOL, 2**255, "elsewhere") == a
    assert store.ensure_campaign(1, POOL, 2**255, str(tmp_path)) != a
    r = store.ensure_round(a, 3)
    assert store.ensure_round(a, 3) == r
    assert store.round_status(r) == RoundStatus.PENDING


def test_begin_stage_returns_false_once_done(store, round_pk):
    assert store.begin_stage(round_pk, "train") is True
    assert store.stage_status(round_pk, "train") == StageStatus.STARTED
    store.finish_stage(round_pk, "train", output_sha256="ab" * 32)
    assert store.begin_stage(round_pk, "train") is False
    record = store.stage_run(round_pk, "train")
    assert (record.status, record.attempts, record.output_sha256) == (
        StageStatus.DONE,
        1,
        "ab" * 32,
    )
    assert record.finished_at is not None


def test_stage_left_started_by_a_crash_is_begun_again(store, round_pk):
    assert store.begin_stage(round_pk, "train") is True
    # the process died here: no finish, no fail; a restart (same owner here) begins it again
    assert store.begin_stage(round_pk, "train") is True
    assert store.stage_run(round_pk, "train").attempts == 2


def test_stage_started_by_a_dead_process_is_begun_again(engine, round_pk):
    dead = mp.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    host = RoundStore(engine).owner.rpartition(":")[0]
    assert RoundStore(engine, owner=f"{host}:{dead.pid}").begin_stage(round_pk, "train")
    assert RoundStore(engine).begin_stage(round_pk, "train") is True
    assert RoundStore(engine).stage_run(round_pk, "train").attempts == 2


def test_stage_started_by_another_live_host_is_refused_until_stale(engine, round_pk):
    RoundStore(engine, owner="other-host:1").begin_stage(round_pk, "train")
    with pytest.raises(StageError, match="running in other-host:1"):
        RoundStore(engine).begin_stage(round_pk, "train")
    assert RoundStore(engine, stale_after=timedelta(0)).begin_stage(round_pk, "train") is True


def test_failed_stage_is_retried(store, round_pk):
    store.begin_stage(round_pk, "generate")
    store.fail_stage(round_pk, "generate", "CUDA out of memory")
    record = store.stage_run(round_pk, "generate")
    assert (record.status, record.error) == (StageStatus.FAILED, "CUDA out of memory")
    with pytest.raises(StageError, match="failed"):
        store.finish_stage(round_pk, "generate")
    assert store.begin_stage(round_pk, "generate") is True
    assert store.stage_run(round_pk, "generate").error is None
    store.finish_stage(round_pk, "generate")
    with pytest.raises(StageError, match="done"):
        store.fail_stage(round_pk, "generate", "late")


def test_finish_stage_refuses_a_stage_never_begun(store, round_pk):
    with pytest.raises(StageError, match="never begun"):
        store.finish_stage(round_pk, "sign")


def test_resume_point_is_the_first_stage_not_done(store, round_pk):
    assert store.resume_point(round_pk, STAGES) == "prepare"
    for stage in STAGES[:2]:
        store.begin_stage(round_pk, stage)
        store.finish_stage(round_pk, stage)
    store.begin_stage(round_pk, "generate")
    assert store.resume_point(round_pk, STAGES) == "generate"
    for stage in STAGES[2:]:
        store.begin_stage(round_pk, stage)
        store.finish_stage(round_pk, stage)
    assert store.resume_point(round_pk, STAGES) is None


def test_signatures_are_idempotent(store, round_pk):
    assert store.add_signature(round_pk, SIGNER_B, DIGEST, SIG_B) is True
    assert store.add_signature(round_pk, SIGNER_A, DIGEST, SIG_A) is True
    assert (
        store.add_signature(round_pk, SIGNER_A.upper().replace("0X", "0x"), DIGEST, SIG_A) is False
    )
    assert store.signatures(round_pk, DIGEST) == {SIGNER_A: SIG_A, SIGNER_B: SIG_B}
    assert list(store.signatures(round_pk, DIGEST)) == [SIGNER_A, SIGNER_B]
    assert store.signatures(round_pk, "0x" + "22" * 32) == {}
    with pytest.raises(StageError, match="another signature"):
        store.add_signature(round_pk, SIGNER_A, DIGEST, SIG_B)


def test_second_submission_is_refused_while_the_first_is_live(store, round_pk):
    store.record_submission(round_pk, TX1, nonce=7)
    assert store.round_status(round_pk) == RoundStatus.SUBMITTED
    store.record_submission(round_pk, TX1, nonce=7)  # same transaction again: no-op
    with pytest.raises(StageError, match="submit it twice"):
        store.record_submission(round_pk, TX2, nonce=8)
    store.confirm_submission(TX1, confirmations=3)
    assert store.live_submission(round_pk).status == SubmissionStatus.CONFIRMED
    with pytest.raises(StageError, match="submit it twice"):
        store.record_submission(round_pk, TX2, nonce=8)
    with pytest.raises(StageError, match="confirmed"):
        store.fail_submission(TX1)


def test_submission_is_allowed_again_after_the_first_failed(store, round_pk):
    store.record_submission(round_pk, TX1, nonce=7)
    store.fail_submission(TX1, "reverted")
    assert store.round_status(round_pk) == RoundStatus.PENDING
    assert store.live_submission(round_pk) is None
    store.record_submission(round_pk, TX2, nonce=8)
    assert store.live_submission(round_pk).tx_hash == TX2
    with pytest.raises(StageError, match="submit it twice"):
        store.record_submission(round_pk, TX3, nonce=9)


def test_a_failed_transaction_recorded_again_is_sent_again(store, round_pk):
    # Killed between recording and broadcasting, the restart marks it failed, then signs the
    # same postRound with the same nonce: the same hash, which does get mined this time.
    store.record_submission(round_pk, TX1, nonce=7)
    store.fail_submission(TX1, "unknown after a restart")
    store.record_submission(round_pk, TX1, nonce=7)
    live = store.live_submission(round_pk)
    assert live.tx_hash == TX1 and live.status == SubmissionStatus.SENT and live.error is None
    assert store.round_status(round_pk) == RoundStatus.SUBMITTED
    with pytest.raises(StageError, match="submit it twice"):
        store.record_submission(round_pk, TX2, nonce=8)
    store.fail_submission(TX1)
    store.record_submission(round_pk, TX2, nonce=8)
    with pytest.raises(StageError, match="submit it twice"):  # TX1 cannot come back beside TX2
        store.record_submission(round_pk, TX1, nonce=7)


def test_database_index_refuses_a_second_live_submission(engine, round_pk):
    insert = sa.text(
        "INSERT INTO submissions (round_pk, tx_hash, nonce, status, confirmations, sent_at) "
        "VALUES (:r, :tx, 1, :status, 0, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"r": round_pk, "tx": TX1, "status": "failed"})
        conn.execute(insert, {"r": round_pk, "tx": TX2, "status": "sent"})
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"r": round_pk, "tx": TX3, "status": "confirmed"})


def test_set_round_status(store, round_pk):
    store.set_round_status(round_pk, "challengeable")
    assert store.round_status(round_pk) == RoundStatus.CHALLENGEABLE
    with pytest.raises(ValueError):
        store.set_round_status(round_pk, "lost")


def _race_begin_stage(url, round_pk, start, end, results):
    engine = make_engine(url)
    start.wait()
    try:
        results.put("won" if RoundStore(engine).begin_stage(round_pk, "train") else "skipped")
    except StageError:
        results.put("refused")
    end.wait()  # stay alive until every racer has tried: a live owner is not a crashed one
    engine.dispose()


@pytest.mark.parametrize("racers", [2, 4])
def test_concurrent_begin_stage_has_exactly_one_winner(url, round_pk, racers):
    ctx = mp.get_context("spawn")
    start, end, results = ctx.Barrier(racers), ctx.Barrier(racers), ctx.Queue()
    procs = [
        ctx.Process(target=_race_begin_stage, args=(url, round_pk, start, end, results))
        for _ in range(racers)
    ]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert outcomes == ["refused"] * (racers - 1) + ["won"]


def test_postgresql_url_is_passed_to_create_engine_lazily(monkeypatch):
    seen = {}

    def fake_create_engine(url, **kwargs):
        seen["url"], seen["kwargs"] = url, kwargs
        return "engine"

    monkeypatch.setattr(state_db.sa, "create_engine", fake_create_engine)
    url = "postgresql://oracle:secret@db.example:5432/state"
    assert make_engine(url) == "engine"
    assert seen["url"].render_as_string(hide_password=False) == url
    assert seen["kwargs"] == {"pool_pre_ping": True}  # no SQLite connect_args
