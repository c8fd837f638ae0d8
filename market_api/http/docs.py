"""The docs page (``/schema``): Swagger UI served from an installed package, never a CDN, so
it works offline; Redoc and the other renderers ship in no package we install and answer 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIResponse,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/schema"
ASSETS = "/swagger-ui"
"""Swagger UI's files, below ``DOCS_PATH``."""

SECURITY_SCHEMES = {
    "bearer": SecurityScheme(
        type="http",
        scheme="bearer",
        description="An API key as 'Authorization: Bearer <key>'",
    ),
    "apiKey": SecurityScheme(
        type="apiKey",
        name="X-API-Key",
        security_scheme_in="header",
        description="An API key as 'X-API-Key: <key>'",
    ),
}
KEY_REQUIRED: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}]
"""Either scheme; put on the guarded routes only when ``MARKET_API_AUTH=required``."""


def key_required(auth_required: bool) -> list[SecurityRequirement] | None:
    """The security of the routes the gate guards (all but /health, /ready and the docs)."""
    return KEY_REQUIRED if auth_required else None


def document_unauthorized(openapi: OpenAPI) -> None:
    """A 401 on every operation with ``security``: the gate's answer to a missing or bad key."""
    for item in (openapi.paths or {}).values():
        operation = item.get
        if operation is None or not operation.security or operation.responses is None:
            continue
        error = next((r for r in operation.responses.values() if isinstance(r, OpenAPIResponse)
                      and r.content and operation.responses.get("200") is not r), None)  # fmt: skip
        operation.responses["401"] = OpenAPIResponse(
            description="The API key is missing, malformed, unknown or revoked",
            content=error.content if error is not None else None,
        )


class LocalSwaggerPlugin(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` and ``/schema/swagger``, its files served by the API itself."""

    def __init__(self, assets_dir: Path = Path(str(swagger_ui_path)), **kwargs: Any) -> None:
        self.assets_dir = assets_dir
        base = f"{DOCS_PATH}{ASSETS}"
        super().__init__(
            js_url=f"{base}/swagger-ui-bundle.js",
            css_url=f"{base}/swagger-ui.css",
            standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>",
            path=["/", "/swagger"],
            **kwargs,
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)  # Swagger UI's oauth2-redirect.html
        router.register(
            create_static_files_router(ASSETS, directories=[self.assets_dir], name="swagger-ui")
        )


def openapi_config(title: str, version: str, description: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title=title,
        version=version,
        description=description,
        path=DOCS_PATH,
        components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        render_plugins=[
            LocalSwaggerPlugin(),
            YamlRenderPlugin(),
        ],
    )
