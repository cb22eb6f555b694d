"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:server`` (configuration from the environment).

Logs of the app and its job processes go to stderr (gunicorn's error log) at ``AEVIS_LOG_LEVEL``
(default INFO) unless logging was configured already.
"""

import logging
import os

from app.factory import create_app

if not logging.getLogger().handlers:
    logging.basicConfig(level=os.environ.get("AEVIS_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
application = create_app()
server = application.server
