"""What the lab changes in its copy of the user's NGINX files, each on the line it is on.

Line numbers stay those of the user's files, so that NGINX's own messages and the lab's
notes point at lines the user knows. The changes: the stand-in nginx.conf around a
``conf.d``-style file (``wrapper``), the lab's access log (``LABLOG`` lines on stdout, which
every check reads) beside the user's, ``access_log off`` becoming that log, and the address of
an upstream server Docker cannot give a container (``user_upstreams.backends`` says which and
why). Nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from lab.errors import ConfigError
from lab.topology.nginx_tree import Directive
from lab.topology.render import ACCESS_LOG_FIELDS, ACCESS_LOG_TAG
from lab.topology.user_upstreams import ServerLine

LOG_FORMAT = "lab_history"
LAB_ACCESS_LOG = f"access_log /dev/stdout {LOG_FORMAT};"
_QUOTED_OR_COMMENT = re.compile(r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|#.*$""")
_ACCESS_LOG = re.compile(r"\baccess_log\b([^;]*);")
_SERVER_LINE = r"\bserver\s+(['\"]?){address}\1(?=[\s;])"
_LOG_REFUSED = "the lab cannot place its access log here: write this access_log on one line"
_LOG_HINT = ("the lab logs every request beside your own logs, on the same line, so that line "
             "numbers stay yours")


def _log_format() -> str:
    log = "\\t".join((ACCESS_LOG_TAG, *ACCESS_LOG_FIELDS))
    return f"log_format {LOG_FORMAT} '{log}';"


def wrapper(include: str) -> str:
    """The lab's stand-in for Debian's stock nginx.conf, including the user's file."""
    return f"""# The lab's stand-in for Debian's stock /etc/nginx/nginx.conf, around your file.
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /dev/stderr;
include /etc/nginx/modules-enabled/*.conf;
events {{
    worker_connections 768;
}}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    {_log_format()}
    {LAB_ACCESS_LOG}
    gzip on;
    include {include};
}}
"""


def _code_end(line: str) -> int:
    """Where a line's code ends: at its comment (a # outside quotes), else its end."""
    for match in _QUOTED_OR_COMMENT.finditer(line):
        if match.group(0).startswith("#"):
            return match.start()
    return len(line)


def _edit_line(text: str, line: int, edit: Callable[[str], str | None], where: str, *,
               refused: str, hint: str) -> str:
    """``text`` with the code of one line (not its comment) changed by ``edit``; when
    ``edit`` finds nothing to change there, ConfigError ``refused``."""
    lines = text.split("\n")
    original = lines[line - 1]
    code_end = _code_end(original)
    changed = edit(original[:code_end])
    if changed is None:
        raise ConfigError(f"{where}: {refused}", hint=hint)
    lines[line - 1] = changed + original[code_end:]
    return "\n".join(lines)


def _access_log_edits(tree: Sequence[Directive]) -> list[tuple[str, int, str]]:
    """(file, line, kind) of each access_log below http: "beside" (the lab's log goes beside
    it), "replace" (``off`` becomes the lab's log), "null" (``off`` at http level)."""
    edits: list[tuple[str, int, str]] = []

    def visit(block: Sequence[Directive], depth: int) -> None:
        for d in block:
            if d.name == "access_log" and d.args and d.file:
                off = d.args[0] == "off"
                if depth == 0:
                    # The lab's own http-level log is already there: only "off" must go.
                    if off:
                        edits.append((d.file, d.line, "null"))
                else:
                    edits.append((d.file, d.line, "replace" if off else "beside"))
            if d.block is not None:
                visit(d.block, depth + (d.name != "http"))

    http = [d for d in tree if d.name == "http"]
    visit(http[0].block or () if http else (), 0)
    return edits


def log_edits(files: dict[str, str], tree: Sequence[Directive], notes: list[str],
              shown: Mapping[str, str]) -> dict[str, str]:
    """Add the lab's access log beside every access_log below http, and replace ``off``."""
    out = dict(files)
    # Directives name the file as shown (the host path); edits go to the container copy.
    container = {host: path for path, host in shown.items()}
    for file, line, kind in sorted(set(_access_log_edits(tree)), key=lambda e: (e[0], -e[1])):
        where = f"{file}:{line}"

        def edit(code: str, kind: str = kind) -> str | None:
            match = _ACCESS_LOG.search(code)
            if match is None:
                return None
            if kind == "beside":
                return code[:match.end()] + " " + LAB_ACCESS_LOG + code[match.end():]
            # "off" would silence the lab's log of this level too.
            new = LAB_ACCESS_LOG if kind == "replace" else "access_log /dev/null;"
            return code[:match.start()] + new + code[match.end():]

        out[container[file]] = _edit_line(out[container[file]], line, edit, where,
                                          refused=_LOG_REFUSED, hint=_LOG_HINT)
        if kind != "beside":
            notes.append(f"{where}: access_log off: the lab logs these requests "
                         "(its checks read every request's log line)")
    return out


def inject_http_log(text: str, http: Directive, where: str) -> str:
    """A whole nginx.conf: the lab's log format and log, on the line of ``http {``."""
    addition = f" {_log_format()} {LAB_ACCESS_LOG}"

    def edit(code: str) -> str | None:
        index = code.find("{", code.find("http"))
        if index < 0:
            return None
        return code[:index + 1] + addition + code[index + 1:]

    return _edit_line(text, http.line, edit, where, refused=_LOG_REFUSED, hint=_LOG_HINT)


_USER = re.compile(r"\buser\b[^;]*;")
# The account Debian's nginx package creates, which the lab's image runs its workers as.
LAB_NGINX_USER = "www-data"


def user_edit(text: str, tree: Sequence[Directive], main: str, notes: list[str]) -> str:
    """``user nginx;`` (the official image's account) names an account the lab's Debian image
    lacks, and NGINX refuses to start (getpwnam failed); which account the workers run as
    changes no routing, so the lab's copy names Debian's."""
    for d in tree:
        if d.name != "user" or d.file != main or d.args[:1] == (LAB_NGINX_USER,):
            continue
        where = f"{d.file}:{d.line}"

        def edit(code: str) -> str | None:
            match = _USER.search(code)
            if match is None:
                return None
            return code[:match.start()] + f"user {LAB_NGINX_USER};" + code[match.end():]

        text = _edit_line(text, d.line, edit, where, refused="write the user directive on one "
                          "line", hint="the lab edits your copy line by line")
        notes.append(f"{where}: user {' '.join(d.args)}: the lab's copy runs NGINX's workers as "
                     f"{LAB_NGINX_USER} (Debian's account for NGINX); the account changes no "
                     "routing")
    return text


def rewrite_servers(files: dict[str, str], rewrites: Sequence[tuple[ServerLine, str]],
                    shown: Mapping[str, str]) -> dict[str, str]:
    """The container copies with each rewritten server's address replaced on its own line."""
    out = dict(files)
    container = {host: path for path, host in shown.items()}
    by_line: dict[tuple[str, int], list[tuple[ServerLine, str]]] = {}
    for server, new in rewrites:
        by_line.setdefault((server.directive.file, server.directive.line), []).append(
            (server, new))
    for (file, line), edits in by_line.items():
        def edit(code: str, edits: list[tuple[ServerLine, str]] = edits) -> str | None:
            # Several servers may share a line (upstream u { server a; server b; }): each is
            # found after the previous one, in the order NGINX read them.
            position = 0
            for server, new in sorted(edits, key=lambda e: e[0].order):
                pattern = re.compile(_SERVER_LINE.format(address=re.escape(server.address)))
                match = pattern.search(code, position)
                if match is None:
                    return None
                start = match.start() + match.group(0).index(server.address)
                code = code[:start] + new + code[start + len(server.address):]
                position = start + len(new)
            return code

        out[container[file]] = _edit_line(
            out[container[file]], line, edit, f"{file}:{line}",
            refused="the lab cannot replace this server's address: write the server "
            "directive on one line",
            hint="the lab replaces an address on its own line, so that line numbers stay yours")
    return out
