"""The docs page (``/schema``): Swagger UI served from an installed package, never a CDN, so
it works offline; Redoc and the other renderers ship in no package we install and answer 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/schema"
ASSETS = "/swagger-ui"
"""Swagger UI's files, below ``DOCS_PATH``."""


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
        render_plugins=[
            LocalSwaggerPlugin(),
            YamlRenderPlugin(),
        ],
    )
