#!/usr/bin/env python
"""The example's manage.py: runserver, tidings (the hub), import_contacts."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
