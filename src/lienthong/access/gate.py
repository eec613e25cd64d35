"""The gate every API request passes: who is it, what may they see, what happened.

:class:`AccessGate` authenticates the bearer token, builds the request's
:class:`AccessContext`, hands the FHIR engine a store guarded by the policy,
and afterwards appends one audit entry — allowed, denied or failed — and
feeds it to the alert rules. The HTTP layer calls it; it knows nothing of
HTTP beyond a header lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from lienthong.access.alerts import AlertEngine
from lienthong.access.audit import AuditEntry, AuditLog
from lienthong.access.auth import Authenticator, AuthError, Principal
from lienthong.access.guard import GuardedStore
from lienthong.access.policy import AccessContext, Policy
from lienthong.access.smart import TokenEndpoint
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.search_parse import SearchParser
from lienthong.settings import Settings

log = logging.getLogger("lienthong.access")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# who acts when authentication is off (loopback only): the local operator
LOCAL_OPERATOR = Principal(
    name="local-operator",
    role="data_admin",
    organization=None,
    practitioner=None,
    patient=None,
    scopes=frozenset({"user/*.cruds", "system/*.cruds"}),
)


def auth_is_off(settings: Settings) -> bool:
    if settings.auth not in ("on", "off"):
        raise ValueError(f"LIENTHONG_AUTH must be on or off, not {settings.auth!r}")
    if settings.auth == "off" and settings.host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"authentication can be switched off only for a server bound to loopback, "
            f"not {settings.host}"
        )
    return settings.auth == "off"


@dataclass
class Outcome:
    status: int
    detail: str | None = None


class AccessGate:
    def __init__(self, settings: Settings, engine: FhirEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.auth_off = auth_is_off(settings)
        parser = SearchParser(engine.registry, engine.base_url, engine.unindexed)
        self.policy = Policy(settings, parser)
        self.authenticator = (
            None if self.auth_off else Authenticator(settings, settings.database_url)
        )
        self.audit = AuditLog(settings.database_url, anchor_key=settings.audit_key)
        self.alerts = AlertEngine(settings, settings.database_url)
        self.tokens = TokenEndpoint(settings, self.audit)

    def close(self) -> None:
        self.tokens.close()
        self.audit.close()
        close = getattr(self.authenticator, "close", None)
        if close is not None:
            close()
        close_alerts = getattr(self.alerts, "close", None)
        if close_alerts is not None:
            close_alerts()

    def context(self, headers: Mapping[str, str], source_ip: str | None) -> AccessContext:
        """The request's context; raises :class:`AuthError` (401) without a valid token."""
        if self.authenticator is None:
            principal = LOCAL_OPERATOR
        else:
            principal = self.authenticator.authenticate(headers.get("authorization"))
        # HTTP headers are ASCII: a reason in Vietnamese comes percent-encoded (UTF-8)
        glass = unquote((headers.get("x-break-glass") or "").strip()) or None
        purpose = (headers.get("x-purpose-of-use") or "").strip() or None
        if glass:
            purpose = "ETREAT"
        elif purpose is None and principal.role in ("clinician", "commune_staff"):
            purpose = "TREAT"
        return AccessContext(principal, break_glass=glass, purpose=purpose, source_ip=source_ip)

    def engine_for(self, ctx: AccessContext) -> FhirEngine:
        store = GuardedStore(self.engine.store, self.policy, ctx, self.engine.extractor)
        return self.engine.with_store(store)

    def record(
        self,
        ctx: AccessContext | None,
        action: str,
        res_type: str | None,
        res_id: str | None,
        query: str | None,
        outcome: Outcome,
        source_ip: str | None = None,
    ) -> None:
        """Append the audit entry of one interaction and run the alert rules on it."""
        principal = ctx.principal if ctx is not None else None
        if outcome.status in (401, 403):
            result = "denied"
        elif outcome.status >= 400:
            result = "error"
        else:
            result = "success"
        on_behalf = None
        if principal is not None:
            if principal.practitioner:
                on_behalf = f"Practitioner/{principal.practitioner}"
            elif principal.organization:
                on_behalf = f"Organization/{principal.organization}"
        entry = AuditEntry(
            user=principal.name if principal else "anonymous",
            role=principal.role if principal else "none",
            on_behalf_of=on_behalf,
            action=action,
            resource_type=res_type,
            resource_id=res_id,
            query=query or None,
            patients=tuple(sorted(ctx.touched)) if ctx is not None else (),
            outcome=result,
            status=outcome.status,
            purpose=ctx.purpose if ctx else None,
            break_glass=ctx.break_glass if ctx else None,
            source_ip=(ctx.source_ip if ctx else None) or source_ip,
            detail=outcome.detail or (ctx.denied or ctx.note if ctx else None),
        )
        record = self.audit.append(entry)
        for alert in self.alerts.observe(record):
            log.warning("alert %s for %s: %s", alert.rule, alert.user, alert.detail)


def run_audited(
    gate: AccessGate,
    headers: Mapping[str, str],
    source_ip: str | None,
    action: str,
    res_type: str | None,
    res_id: str | None,
    query: str | None,
    fn: Callable[[FhirEngine, AccessContext], object],
) -> object:
    """Authenticate, run ``fn`` on the guarded engine, audit whatever happens."""
    from lienthong.fhir.errors import FhirError

    ctx: AccessContext | None = None
    outcome = Outcome(500, "unexpected error")
    try:
        ctx = gate.context(headers, source_ip)
        result = fn(gate.engine_for(ctx), ctx)
        outcome = Outcome(int(getattr(result, "status", 200)))
        return result
    except AuthError as exc:
        outcome = Outcome(401, str(exc))
        raise
    except FhirError as exc:
        outcome = Outcome(exc.status, "; ".join(i.diagnostics for i in exc.issues)[:500])
        raise
    finally:
        gate.record(ctx, action, res_type, res_id, query, outcome, source_ip)
