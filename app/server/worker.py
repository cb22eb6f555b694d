"""Celery worker entry point: ``celery -A app.server.worker worker`` (scaled-out mode, see Procfile).

The worker builds the same Dash app as the web processes (configuration from the environment,
``AEVIS_JOB_BACKEND`` forced to ``celery``), so each background callback is registered as a task
of the same name; models load lazily in the pool processes on their first job.
"""

from app.config import AppConfig
from app.server.factory import create_app

application = create_app(AppConfig.from_env(job_backend="celery", prepare_on_start=False))
celery = application.server.extensions["aevis_manager"].handle
