"""The references, served by gunicorn with the service's own settings (serving.gunicorn_argv).

- POST /noop/<job_id>/<token>: parses the JSON body and answers 200; the ceiling of Flask.
- POST /naive/<job_id>/<token>: one SQLAlchemy ORM insert of the body and a commit.
- POST /floor/<job_id>/<token>: reads the body and answers 200 in front of Flask, as the
  receiver does; what gunicorn's own handling of a request costs.
- GET /bare/jobs/<job_id>: one row looked up by its key, as JSON; the ceiling of get-one.

Their naive table is created by the kit (create_all): it is no part of the service's schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import DateTime, LargeBinary, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from webhook_app.infra.db import make_engine
from webhook_app.settings import Settings

APP = "bench.reference:create_app()"
RECEIVED = b'{"received": true}'


class Base(DeclarativeBase):
    pass


class NaiveDelivery(Base):
    __tablename__ = "bench_naive_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


def create_app() -> Flask:
    settings = Settings.from_env()
    # Pooled as the service's web processes are: a connection per thread.
    engine = make_engine(settings.database_url, pool_size=settings.web_threads)
    sessions = sessionmaker(engine)
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.post("/noop/<job_id>/<token>")
    def noop(job_id: str, token: str) -> Any:
        request.get_json(force=True)
        return jsonify({"received": True})

    @app.post("/naive/<job_id>/<token>")
    def naive(job_id: str, token: str) -> Any:
        with sessions() as session:
            session.add(NaiveDelivery(job_id=job_id, body=request.get_data()))
            session.commit()
        return jsonify({"received": True})

    @app.get("/bare/jobs/<job_id>")
    def bare(job_id: str) -> Any:
        with engine.connect() as connection:
            row = (
                connection.execute(text("SELECT * FROM jobs WHERE public_id = :id"), {"id": job_id})
                .mappings()
                .first()
            )
        if row is None:
            return jsonify({"error": "not found"}), 404
        return jsonify({key: _plain(value) for key, value in row.items()})

    flask_app = app.wsgi_app

    def in_front(environ: Any, start_response: Any) -> Any:
        if not environ.get("PATH_INFO", "").startswith("/floor/"):
            return flask_app(environ, start_response)
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(RECEIVED)))],
        )
        return [RECEIVED]

    app.wsgi_app = in_front  # type: ignore[method-assign]
    return app


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
