"""WSGI entry point for gunicorn: ``gunicorn -c python:app.server.gunicorn_conf app.server.wsgi:server``.

Logs of the app and its job processes go to stderr (gunicorn's error log) at ``AEVIS_LOG_LEVEL``
(default INFO) unless logging was configured already.
"""

import logging

from app.config import AppConfig
from app.server.factory import create_app

config = AppConfig.from_env()
if not logging.getLogger().handlers:
    logging.basicConfig(level=config.log_level, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
application = create_app(config)
server = application.server
