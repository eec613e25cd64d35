"""``lienthong user ...``, ``lienthong token``, ``lienthong client ...``: the embedded issuer's
users, tokens and client systems.

For a fresh install without an identity provider: add users with their role
and organization / practitioner / patient ids, then mint a bearer token
(RFC 6750) for scripts and tests::

    lienthong user add bs-lan --role clinician --organization org-1 --practitioner pr-7
    TOKEN=$(lienthong token bs-lan)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/fhir/Patient

``lienthong token`` prints the token alone on stdout so it can be captured;
every message goes to stderr. Scopes use SMART App Launch v2 syntax
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

Client systems get their tokens themselves from the token endpoint (SMART
Backend Services) with a JWT signed by their private key; register them with
their public keys, a JWKS file or the https URL of one::

    lienthong client add his-bv-tw --role system --organization org-1 --jwks his.jwks.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lienthong.access.auth import DEFAULT_SCOPES, ROLES, TokenIssuer, User, UserDirectory
from lienthong.access.clients import CLIENT_ROLES, Client, ClientRegistry
from lienthong.cli_common import settings_for
from lienthong.cli_options import DatabaseOpt

user_app = typer.Typer(
    name="user",
    help="Users of the embedded token issuer (add, list, remove).",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _database_url(database: str | None, announce: bool = True) -> str:
    return settings_for(database, announce=announce).database_url


def _open_directory(database: str | None, *, announce: bool = True) -> UserDirectory:
    try:
        return UserDirectory(_database_url(database, announce))
    except Exception as error:  # bad URL, unreachable server, unwritable file
        raise _fail(f"cannot open the user directory: {error}") from None


def _describe(user: User) -> str:
    ids = [
        f"{label}={value}"
        for label, value in (
            ("organization", user.organization),
            ("practitioner", user.practitioner),
            ("patient", user.patient),
        )
        if value is not None
    ]
    return "\t".join([user.name, user.role, *ids])


@user_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="user name (the token's sub)")],
    role: Annotated[str, typer.Option("--role", help=f"one of: {', '.join(ROLES)}")],
    organization: Annotated[
        str | None,
        typer.Option(help="Organization id the user works for (clinician, commune_staff)"),
    ] = None,
    practitioner: Annotated[str | None, typer.Option(help="Practitioner id of the user")] = None,
    patient: Annotated[
        str | None, typer.Option(help="Patient id of the citizen's own record")
    ] = None,
    database: DatabaseOpt = None,
) -> None:
    """Add a user; refuses a name that already exists."""
    users = _open_directory(database)
    try:
        user = users.add(name, role, organization, practitioner, patient)
    except ValueError as error:
        raise _fail(str(error)) from None
    finally:
        users.close()
    typer.echo(f"added {_describe(user)}")


@user_app.command("list")
def list_users(database: DatabaseOpt = None) -> None:
    """List users, one per line: name, role, ids (tab separated)."""
    users = _open_directory(database)
    try:
        for user in users.list():
            typer.echo(_describe(user))
    finally:
        users.close()


@user_app.command("remove")
def remove_user(
    name: Annotated[str, typer.Argument(help="user name")],
    database: DatabaseOpt = None,
) -> None:
    """Remove a user; every token already issued to them stops working."""
    users = _open_directory(database)
    try:
        removed = users.remove(name)
    finally:
        users.close()
    if not removed:
        raise _fail(f"unknown user {name!r}")
    typer.echo(f"removed {name}")


def token_command(
    name: Annotated[str, typer.Argument(help="user name")],
    scope: Annotated[
        str | None,
        typer.Option(
            "--scope",
            help="space-separated SMART v2 scopes (default by role: "
            + "; ".join(f"{role} '{scopes}'" for role, scopes in DEFAULT_SCOPES.items())
            + ")",
        ),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option("--ttl", help="lifetime in seconds (default: LIENTHONG_TOKEN_TTL, 3600)"),
    ] = None,
    database: DatabaseOpt = None,
) -> None:
    """Print a bearer token for a user of the embedded issuer (the token alone, on stdout)."""
    settings = settings_for(database)
    url = settings.database_url
    users = _open_directory(url, announce=False)  # said above
    try:
        user = users.get(name)
    finally:
        users.close()
    if user is None:
        raise _fail(f"unknown user {name!r} (add it with: lienthong user add)")
    try:
        issuer = TokenIssuer(url, settings.issuer(), settings.token_audience)
    except Exception as error:
        raise _fail(f"cannot open the signing keys: {error}") from None
    try:
        token = issuer.issue(user, scope, settings.token_ttl if ttl is None else ttl)
    except ValueError as error:
        raise _fail(str(error)) from None
    finally:
        issuer.close()
    typer.echo(token)


# ---------------------------------------------------------------------------
# client systems (SMART Backend Services)

client_app = typer.Typer(
    name="client",
    help="Client systems that get tokens with their own key pair (add, list, remove).",
    no_args_is_help=True,
    add_completion=False,
)


def _open_registry(database: str | None) -> ClientRegistry:
    try:
        return ClientRegistry(_database_url(database))
    except Exception as error:  # bad URL, unreachable server, unwritable file
        raise _fail(f"cannot open the client registry: {error}") from None


def _describe_client(client: Client) -> str:
    keys = (
        f"jwks_uri={client.jwks_uri}"
        if client.jwks_uri
        else ("jwks=" + ",".join(str(k.get("kid")) for k in (client.jwks or {}).get("keys", [])))
    )
    fields = [client.client_id, client.role]
    if client.organization is not None:
        fields.append(f"organization={client.organization}")
    return "\t".join([*fields, f"scope={client.scope}", keys])


def _read_jwks(source: str) -> tuple[dict[str, Any] | None, str | None]:
    """(JWKS, None) from a file, or (None, URL) for an http(s) URL fetched when used."""
    if source.startswith(("https://", "http://")):
        return None, source
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise _fail(f"--jwks: cannot read {source}: {error.strerror or error}") from None
    try:
        return json.loads(text), None
    except ValueError as error:
        raise _fail(f"--jwks: {source} is not JSON: {error}") from None


@client_app.command("add")
def add_client(
    client_id: Annotated[str, typer.Argument(help="client id (the assertions' iss and sub)")],
    role: Annotated[str, typer.Option("--role", help=f"one of: {', '.join(CLIENT_ROLES)}")],
    jwks: Annotated[
        str,
        typer.Option(
            "--jwks",
            help="the client's public keys: a JWKS file, or an https URL of one"
            " (fetched when the client authenticates)",
        ),
    ],
    organization: Annotated[
        str | None, typer.Option(help="Organization id the client acts for")
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option("--scope", help="system scopes it may be granted at most (default: by role)"),
    ] = None,
    database: DatabaseOpt = None,
) -> None:
    """Register a client system; refuses an id that already exists."""
    keys, uri = _read_jwks(jwks)
    registry = _open_registry(database)
    try:
        client = registry.add(client_id, role, organization, jwks=keys, jwks_uri=uri, scope=scope)
    except ValueError as error:
        raise _fail(str(error)) from None
    finally:
        registry.close()
    typer.echo(f"added {_describe_client(client)}")


@client_app.command("list")
def list_clients(database: DatabaseOpt = None) -> None:
    """List clients, one per line: id, role, organization, scope, keys (tab separated)."""
    registry = _open_registry(database)
    try:
        for client in registry.list():
            typer.echo(_describe_client(client))
    finally:
        registry.close()


@client_app.command("remove")
def remove_client(
    client_id: Annotated[str, typer.Argument(help="client id")],
    database: DatabaseOpt = None,
) -> None:
    """Remove a client; every token already given to it stops working."""
    registry = _open_registry(database)
    try:
        removed = registry.remove(client_id)
    finally:
        registry.close()
    if not removed:
        raise _fail(f"unknown client {client_id!r}")
    typer.echo(f"removed {client_id}")
