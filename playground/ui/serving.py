"""How the app is served: login checks, the warning for an open server, and the
arguments to `Blocks.launch` (tight file access, upload size limit, no telemetry)."""
from __future__ import annotations

import hmac
from typing import Callable, Iterable

from .. import BadInput

MAX_UPLOAD = "20mb"
OPEN_HOSTS = ("0.0.0.0", "::", "[::]")


def parse_login(text: str, where: str = "--auth") -> tuple[str, str]:
    """'user:password' -> (user, password); the password may contain ':'."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise BadInput(f"{where} must be user:password with both parts non-empty")
    return user, password


def read_auth_file(path: str) -> list[tuple[str, str]]:
    """One user:password per line; blank lines and lines starting with # are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise BadInput(f"cannot read auth file {path}: {error.strerror}") from None
    logins = [parse_login(line, f"line {i} of {path}") for i, line in enumerate(lines, 1)
              if line.strip() and not line.lstrip().startswith("#")]
    if not logins:
        raise BadInput(f"auth file {path} holds no user:password line")
    return logins


def login_checker(logins: Iterable[tuple[str, str]]) -> Callable[[str, str], bool]:
    """A Gradio auth function comparing names and passwords in constant time."""
    known = [(user.encode(), password.encode()) for user, password in logins]

    def check(username: str, password: str) -> bool:
        given_user, given_password = (username or "").encode(), (password or "").encode()
        ok = False
        for user, secret in known:  # every entry is compared: no early exit
            match_user = hmac.compare_digest(given_user, user)
            match_password = hmac.compare_digest(given_password, secret)
            ok |= match_user and match_password
        return ok

    return check


def exposure_warning(host: str, share: bool, has_auth: bool) -> str | None:
    """A warning when the app is reachable beyond this machine without a login."""
    if has_auth:
        return None
    if share:
        return ("WARNING: --share makes a public link: anyone with it can run models on "
                "this machine. Add --auth user:password (or --auth-file) to require a login.")
    if host in OPEN_HOSTS:
        return (f"WARNING: --host {host} serves every network this machine is on, without a "
                f"login. Add --auth user:password (or --auth-file), or use 127.0.0.1.")
    return None


def share_failed_message(local_url: str | None) -> str:
    """What to tell the user when --share was asked for but no public link came."""
    here = local_url or "this machine's address"
    return ("app.py: no public share link: Gradio's share server could not be reached (this "
            "machine has no network to it, or its tunnel program could not be downloaded). "
            f"The app still runs at {here}, for this machine only. To let others in "
            "without --share: --host 0.0.0.0 --auth user:password on a network they reach, "
            "or your own reverse proxy with --root-path.")


def launch_options(app, *, host: str = "127.0.0.1", port: int | None = None,
                   share: bool = False, auth=None, root_path: str | None = None) -> dict:
    """Keyword arguments for `app.launch` (an app from `build_app`): the only folder
    served beyond Gradio's own cache is the API's output folder."""
    return {"server_name": host, "server_port": port, "share": share, "auth": auth,
            "root_path": root_path or "", "allowed_paths": [str(app.playground_output_dir)],
            "max_file_size": MAX_UPLOAD, "css": getattr(app, "playground_css", None),
            "show_error": True, "ssr_mode": False, "enable_monitoring": False,
            "footer_links": ["api", "gradio"]}
