"""The chat's hooks, run by ``manage.py tidings`` (TIDINGS["HOOKS"]).

Plain functions: they run in the hub's hook threads, where the ORM may be used.
"""

from django.contrib.auth import get_user_model

from tidings import Hooks

hooks = Hooks()


@hooks.on_subscribe(channel=r"^room-")
def joined(conn, context, channel):
    if not conn.user:  # only with TIDINGS["ALLOW_ANONYMOUS"]
        return
    name = get_user_model().objects.filter(pk=conn.user).values_list("username", flat=True)
    conn.broadcast_channel({"joined": name.first() or "someone"}, channel)
