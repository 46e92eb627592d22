"""The WSGI entry point for gunicorn: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from chatproxy import create_app

# Serving needs an upstream to ask (gunicorn.conf.py has already checked).
app = create_app(serving=True, commands=False)
