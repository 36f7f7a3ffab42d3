"""The FastAPI application: runtime wiring, error handling, health and metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from candor import __version__, audit, metrics
from candor.analytics import Analytics
from candor.auth import AuthError, Directory, Public, SourceInfo
from candor.campaigns import CampaignError, Campaigns
from candor.config import Settings
from candor.consent.ledger import Consent, ConsentError
from candor.consent.purposes import Taxonomy
from candor.consent.signals import TrackingPlan
from candor.consent.suppression import SuppressionError, Suppressions
from candor.events import DEFAULT_PERSONAL_PROPERTIES, Rejection, RequestError, Validator
from candor.http import JSON, error
from candor.identity.resolve import Resolver
from candor.identity.service import Identity, IdentityError, identity_rules
from candor.ingest import Ingestor, Work
from candor.insights.reports import InsightError
from candor.profiles import Profiles
from candor.rights.mailer import Mailer
from candor.rights.processing import Processor
from candor.rights.requests import Requests, RightsError
from candor.security import BodyLimit, RateLimited, RateLimits, SecurityHeaders
from candor.segments import SegmentError, Segments
from candor.store import Store
from candor.store.engine import StoreUnavailable
from candor.vault import Vault

log = logging.getLogger("candor.app")


class Runtime:
    """Everything one Candor process holds: settings, store, vault, directory and writer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings)
        self.store.upgrade()
        settings.load_master_keys()  # fail fast with a clear message, creating the key file if needed
        self.vault = Vault(self.store, key_loader=settings.load_master_keys)
        self.directory = Directory(self.store)
        self.taxonomy = Taxonomy.load(settings.purposes_file or None)
        self.plan = TrackingPlan.load(settings.tracking_plan_file or None)
        self.consent = Consent(
            self.store,
            self.vault,
            self.taxonomy,
            default_jurisdiction=settings.default_jurisdiction,
            ttl_days=settings.consent_ttl_days,
        )
        self.identity = Identity(self.store, self.vault, identity_rules(settings), on_change=self._profiles_changed)
        from candor.dictionary import Dictionary
        from candor.inbox import Inbox
        from candor.screening import Screens, WriterHooks

        self.dictionary = Dictionary(self.store)
        self.inbox = Inbox(self.store, self.dictionary)
        self.screens = Screens(self.dictionary, self.inbox, settings)
        self.ingestor = Ingestor(
            self.store,
            self.vault,
            consent=self.consent,
            identity=self.identity,
            privacy=WriterHooks(self.consent, self.inbox),
        )
        if settings.writer_socket:
            # an HTTP worker of `candor serve --workers N`: one writer process commits for all (writer.py)
            from candor.writer import RemoteIngestor

            # same methods as an Ingestor: start, stop, submit, submit_sync, forget_subject(s)
            self.ingestor = cast(Ingestor, RemoteIngestor(settings.writer_socket))
        self.suppressions = Suppressions(self.store, self.vault, settings.default_phone_region)
        from candor.rights.erasure import JOURNAL

        self.analytics = Analytics(
            self.store,
            lake_dir=settings.analytics_path,
            journal=settings.data_dir / JOURNAL,
            cache_bytes=settings.analytics_cache_mb * 1024 * 1024,
        )
        if settings.analytics_purge_engine == "spark" and self.analytics.lake is not None:
            from candor.engines import SparkEngine

            self.analytics.lake.engine = SparkEngine(settings)  # erasure rewrites analytics files on Spark
        self.profiles = Profiles(
            self.store,
            self.vault,
            self.consent,
            self.identity,
            survivorship=settings.survivorship,
            trusted_sources=[s.strip() for s in settings.trusted_sources.split(",") if s.strip()],
            priority=[t.strip() for t in settings.identity_priority.split(",") if t.strip()],
        )
        self.resolver = Resolver(self.store, self.vault, self.identity, settings)
        self.mailer = Mailer(settings.smtp_url, settings.mail_from)
        self.requests = Requests(self.store, self.vault, self.mailer, settings)
        self.rights = Processor(self)
        self.segments = Segments(self)
        self.campaigns = Campaigns(self)
        from candor.insights.reports import Insights

        self.insights = Insights(self)
        from candor.loyalty import Loyalty

        self.loyalty = Loyalty(self)
        from candor.recommend import Decider, Recommendations

        self.recommend = Recommendations(self)
        self.decider = Decider(self)  # a malformed CANDOR_DECIDE_RULES_FILE stops the start, naming the place
        # an erased person in a database restored from an older backup is erased again, now
        self.rights.erasure.reapply()
        if self.analytics.lake is not None:  # and from analytics files restored from an older backup
            self.analytics.lake.apply_journal()
        self.checkpoints = audit.Checkpoints(self.store, self.vault, settings.data_dir)
        self.limits = RateLimits(settings)
        self._validators: dict[int, tuple[Any, Validator]] = {}

    def _profiles_changed(self, subjects: set[str]) -> None:
        for sid in subjects:
            self.consent.invalidate(sid)

    def validator_for(self, source: SourceInfo) -> Validator:
        screen = self.screens.for_source(source.id, source.personal_properties)
        key = (source.personal_properties, screen)
        hit = self._validators.get(source.id)
        v = hit[1] if hit is not None and hit[0] == key else None
        if v is None:
            v = Validator(
                self.vault.pseudonym,
                DEFAULT_PERSONAL_PROPERTIES
                | source.personal_properties
                | self.dictionary.for_source(source.id).sealed_names(),
                self.settings.default_phone_region,
                self.settings.max_event_bytes,
                self.vault.legacy_pseudonyms,
                self.plan,
                frozenset(self.taxonomy.names()),
                contact_hash=self.vault.contact_hash,
                legacy_active=lambda: bool(self.vault.legacy_hmac_versions),
                junk=self.settings.identity_junk_set,
                screen=screen,
            )
            self._validators[source.id] = (key, v)
        return v

    async def record_rejection(self, source_id: int, received_ms: int, kind: str, reason: str) -> None:
        """Keep a record of a request refused as a whole (its reason, never its content)."""
        rej = Rejection(reason, None, None if kind == "batch" else kind, None)
        try:
            await self.ingestor.submit(Work(source_id, [], [rej], received_ms))
        except Exception:  # noqa: BLE001 - the client still gets its 4xx; the metric counts it
            log.warning("could not record a rejected request")

    def close(self) -> None:
        self.ingestor.stop()
        self.store.dispose()


async def _refresh_analytics_every(rt: Runtime, seconds: int) -> None:
    """Keep the analytics store current on a schedule (queries also refresh it before they run)."""
    if seconds <= 0 or rt.analytics.lake is None:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            await loop.run_in_executor(None, rt.analytics.lake.refresh)
        except Exception as exc:  # noqa: BLE001 - retried at the next tick
            log.warning("analytics refresh failed: %s", type(exc).__name__)


async def _recommend_every(rt: Runtime, seconds: int) -> None:
    """Keep the recommendation model current: incremental on a schedule, full when none exists yet."""
    if seconds <= 0 or rt.analytics.lake is None:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            full = rt.recommend.builder.state() is None
            await loop.run_in_executor(None, functools.partial(rt.recommend.rebuild, full=full))
        except Exception as exc:  # noqa: BLE001 - retried at the next tick
            log.warning("recommendation model refresh failed: %s", type(exc).__name__)


async def _checkpoint_every(rt: Runtime, seconds: int) -> None:
    """Sign the audit chain head on a schedule, when it moved since the last checkpoint."""
    if seconds <= 0:
        return
    last: int | None = None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            head = await loop.run_in_executor(None, _head_seq, rt)
            if head != last:
                await loop.run_in_executor(None, rt.checkpoints.write)
                last = head
        except Exception as exc:  # noqa: BLE001 - retried at the next tick
            log.warning("audit checkpoint failed: %s", type(exc).__name__)


def _head_seq(rt: Runtime) -> int:
    from sqlalchemy import select

    from candor.store.schema import audit_head

    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar() or 0)


class Health(BaseModel):
    status: str
    database: str
    version: str


ops = APIRouter(tags=["operations"])


@ops.get(
    "/healthz",
    response_model=Health,
    dependencies=[Depends(Public())],
    responses={503: {"model": Health, "description": "The database is unreachable"}},
)
def healthz(request: Request) -> Any:
    """Liveness and readiness: 200 when the database answers, 503 otherwise."""
    ok = request.app.state.candor.store.ping()
    body = {
        "status": "ok" if ok else "unavailable",
        "database": "ok" if ok else "unreachable",
        "version": __version__,
    }
    return JSON(body, status_code=200 if ok else 503)


@ops.get(
    "/metrics",
    dependencies=[Depends(Public())],
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def prometheus_metrics() -> Response:
    """Prometheus metrics (no personal data in any label)."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    if not logging.getLogger().handlers:  # a worker process started by uvicorn: same scrubbed logs
        from candor import logs

        logs.configure(settings.log_level)
    rt = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.ingestor.start()
        # build the PII detectors before serving, not on the first plausible value mid-traffic
        await asyncio.get_running_loop().run_in_executor(None, rt.screens.warm)
        ticker = asyncio.create_task(_checkpoint_every(rt, settings.audit_checkpoint_seconds))
        from candor import retention

        keeper = asyncio.create_task(retention.every(rt, settings.retention_seconds))
        refresher = asyncio.create_task(_refresh_analytics_every(rt, settings.analytics_refresh_seconds))
        from candor import loyalty_api

        points = asyncio.create_task(loyalty_api.every(rt, settings.loyalty_seconds))
        recommender = asyncio.create_task(_recommend_every(rt, settings.recommend_refresh_seconds))
        yield
        points.cancel()
        recommender.cancel()
        keeper.cancel()
        ticker.cancel()
        refresher.cancel()
        await asyncio.get_running_loop().run_in_executor(None, rt.ingestor.stop)
        if runtime is None:
            rt.store.dispose()

    app = FastAPI(
        title="Candor",
        version=__version__,
        description="A customer data platform that customers can trust. Segment-compatible collection, "
        "consent as the gate of every use, encryption at rest.",
        lifespan=lifespan,
        default_response_class=JSON,
        # no interactive docs page: it would load scripts from a third-party CDN into staff browsers
        docs_url=None,
        redoc_url=None,
    )
    app.state.candor = rt

    from candor import audit_api, collect, stats

    app.include_router(ops)
    app.include_router(collect.router)
    from candor.recommend import api as recommend_api

    app.include_router(recommend_api.router)  # early: decide is a hot read path (routes match in order)
    app.include_router(stats.router)
    app.include_router(audit_api.router)
    from candor import auth_api

    app.include_router(auth_api.router)
    from candor import profiles_api

    app.include_router(profiles_api.router)
    from candor.consent import api as consent_api

    app.include_router(consent_api.router)
    from candor.web import banner

    app.include_router(banner.router)
    from candor.identity import api as identity_api

    app.include_router(identity_api.router)
    from candor.rights import api as rights_api

    app.include_router(rights_api.router)
    from candor import segments_api
    from candor.campaigns import api as campaigns_api

    app.include_router(segments_api.router)
    app.include_router(campaigns_api.router)
    from candor import ops_api

    app.include_router(ops_api.router)
    from candor import privacy_api

    app.include_router(privacy_api.router)
    from candor import insights_api

    app.include_router(insights_api.router)
    from candor.web import assets, console, preferences

    app.include_router(assets.router)
    app.include_router(preferences.router)
    app.include_router(console.router)
    from candor.web import privacy_console

    app.include_router(privacy_console.router)
    from candor.web import insights_page

    app.include_router(insights_page.router)
    from candor.web import console_campaigns

    app.include_router(console_campaigns.router)
    from candor import loyalty_api
    from candor.web import loyalty_pages

    app.include_router(loyalty_api.router)
    app.include_router(loyalty_pages.router)

    install_error_handlers(app)
    install_middleware(app, settings)
    install_openapi(app)
    return app


_json_error = error


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> Response:
        if exc.status == 401 and request.client:
            # failed credentials count against the client address (brute force of keys and tokens)
            try:
                request.app.state.candor.limits.hit("auth_failure_ip", request.client.host)
            except RateLimited as limited:
                return error(
                    429,
                    "rate_limited",
                    "too many failed attempts; retry later",
                    {"Retry-After": str(limited.retry_after)},
                )
        return exc.response()

    @app.exception_handler(ConsentError)
    async def _consent(_: Request, exc: ConsentError) -> Response:
        codes = {404: "not_found", 409: "conflict"}
        return error(exc.status, codes.get(exc.status, "invalid_consent"), str(exc))

    @app.exception_handler(IdentityError)
    async def _identity(_: Request, exc: IdentityError) -> Response:
        codes = {404: "not_found", 409: "conflict"}
        return error(exc.status, codes.get(exc.status, "invalid_identity"), str(exc))

    @app.exception_handler(SegmentError)
    async def _segment(_: Request, exc: SegmentError) -> Response:
        return error(exc.status, "invalid_segment", str(exc))

    @app.exception_handler(CampaignError)
    async def _campaign(_: Request, exc: CampaignError) -> Response:
        codes = {404: "not_found", 409: "conflict", 502: "destination_failed", 503: "unavailable"}
        return error(exc.status, codes.get(exc.status, "invalid_campaign"), str(exc))

    @app.exception_handler(InsightError)
    async def _insight(_: Request, exc: InsightError) -> Response:
        return error(exc.status, exc.code, str(exc))

    @app.exception_handler(RightsError)
    async def _rights(_: Request, exc: RightsError) -> Response:
        return error(exc.status, exc.code, str(exc))

    from candor.dictionary import DictionaryError

    @app.exception_handler(DictionaryError)
    async def _dictionary(_: Request, exc: DictionaryError) -> Response:
        codes = {404: "not_found", 409: "conflict"}
        return error(exc.status, codes.get(exc.status, "invalid_declaration"), str(exc))

    from candor.loyalty import LoyaltyError

    @app.exception_handler(LoyaltyError)
    async def _loyalty(_: Request, exc: LoyaltyError) -> Response:
        return error(exc.status, exc.code, str(exc))

    @app.exception_handler(SuppressionError)
    async def _suppression(_: Request, exc: SuppressionError) -> Response:
        return error(400, "invalid_suppression", str(exc))

    @app.exception_handler(RateLimited)
    async def _limited(_: Request, exc: RateLimited) -> Response:
        return error(429, "rate_limited", "too many requests; retry later", {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestError)
    async def _request(_: Request, exc: RequestError) -> Response:
        metrics.requests_rejected_total.labels(exc.code).inc()
        return JSON(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        # The message names the place and the rule, never the rejected value.
        return _json_error(400, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _json_error(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _db(_: Request, exc: Exception) -> Response:
        log.error("database unavailable: %s", type(exc).__name__)
        return _json_error(503, "unavailable", "the store is unavailable; retry later", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        # Exception text may hold personal data: log the type only.
        log.error("internal error: %s", type(exc).__name__)
        return _json_error(500, "internal", "internal error; the event was not stored, retry later")


class AccessLog:
    """ASGI middleware logging method, path (no query string), status and duration.

    Neither the query string nor the client address is logged: both can hold personal data.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = logging.getLogger("candor.access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.log.info(
                "%s %s %d %.1fms", scope["method"], scope["path"], status[0], (time.perf_counter() - started) * 1000
            )


def install_middleware(app: FastAPI, settings: Settings) -> None:
    from starlette.middleware.cors import CORSMiddleware

    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "Sec-GPC"],
            max_age=600,
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    dependant: Any  # fastapi.dependencies.models.Dependant, or None for non-API routes


def route_table(app: FastAPI) -> list[RouteInfo]:
    """Every route the app serves, with included routers expanded (for the docs and authz tests)."""
    from fastapi import routing

    out = []
    iterate = getattr(routing, "iter_route_contexts", None)
    contexts: Any = iterate(app.routes) if iterate else app.routes
    for ctx in contexts:
        path = getattr(ctx, "path", None)
        if path is None:
            continue
        out.append(RouteInfo(path, frozenset(getattr(ctx, "methods", None) or ()), getattr(ctx, "dependant", None)))
    return out


def install_openapi(app: FastAPI) -> None:
    from candor.collect import MODELS

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {})
        schemas = comps.setdefault("schemas", {})
        for model in set(MODELS.values()):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = js
        comps.setdefault("securitySchemes", {}).update(
            {
                "writeKeyBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Source write key as user name, empty password",
                },
                "bearerToken": {"type": "http", "scheme": "bearer", "description": "Staff API token"},
            }
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
