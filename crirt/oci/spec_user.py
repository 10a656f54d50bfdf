"""Resolve the user of a container process from the CRI security context and the image (pure).

The image's /etc/passwd and /etc/group arrive as text read by the caller; nothing here touches
the filesystem. Rules follow containerd's ``generateUserString`` + ``WithUser`` and the CRI
comments on ``run_as_group`` and ``supplemental_groups_policy``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument

_MAX_ID = 2**32 - 2  # (uid_t)-1 is "no change" to the kernel


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedUser:
    """The identity of the container's first process.

    ``additional_gids`` starts with the primary gid (as ``id -G`` and the CRI's
    ``LinuxContainerUser.supplemental_groups`` report it), then the others in ascending order.
    ``username`` is empty when the uid has no /etc/passwd entry.
    """

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    username: str


def parse_passwd(text: str | None) -> list[PasswdEntry]:
    """Parse passwd(5) text; malformed lines are skipped, as libc does."""
    out: list[PasswdEntry] = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 4:
            continue
        try:
            uid, gid = int(parts[2]), int(parts[3])
        except ValueError:
            continue
        out.append(PasswdEntry(parts[0], uid, gid, parts[5] if len(parts) > 5 else ""))
    return out


def parse_group(text: str | None) -> list[GroupEntry]:
    """Parse group(5) text; malformed lines are skipped."""
    out: list[GroupEntry] = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 3:
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = tuple(m for m in (parts[3] if len(parts) > 3 else "").split(",") if m)
        out.append(GroupEntry(parts[0], gid, members))
    return out


def _check_id(value: int, what: str) -> int:
    if not 0 <= value <= _MAX_ID:
        raise InvalidArgument(f"{what} {value} is out of range")
    return value


def _numeric(s: str) -> int | None:
    return int(s) if s.isdigit() else None


def resolve_user(
    security_context: api_pb2.LinuxContainerSecurityContext,
    image_user: str,
    passwd: str | None,
    group: str | None,
) -> ResolvedUser:
    """Work out uid, primary gid and supplementary groups.

    Precedence: ``run_as_username``, else ``run_as_user``, else the image's USER
    (``uid``, ``name``, ``uid:gid``, ``name:group``); empty means root. ``run_as_group``
    overrides the group. The primary gid defaults to the user's /etc/passwd entry (0 if none).
    Supplementary groups: with policy Merge (default) the /etc/group groups naming the user as a
    member plus ``supplemental_groups``; with Strict only ``supplemental_groups``.

    Raises:
        InvalidArgument: run_as_group without a user, a name missing from the image's
            /etc/passwd or /etc/group, or an id out of range.
    """
    sc = security_context
    users = parse_passwd(passwd)
    groups = parse_group(group)
    has_uid = sc.HasField("run_as_user")
    has_gid = sc.HasField("run_as_group")

    if has_gid and not has_uid and not sc.run_as_username:
        # api.proto: "run_as_group should only be specified when run_as_user or
        # run_as_username is specified; otherwise, the runtime MUST error."
        raise InvalidArgument("run_as_group is specified without run_as_user or run_as_username")

    if sc.run_as_username:
        user_part, group_part = sc.run_as_username, ""
    elif has_uid:
        user_part, group_part = str(_check_id(sc.run_as_user.value, "run_as_user")), ""
    else:
        user_part, _, group_part = image_user.partition(":")

    entry: PasswdEntry | None
    uid = _numeric(user_part) if user_part else 0
    if uid is None:
        entry = next((u for u in users if u.name == user_part), None)
        if entry is None:
            raise InvalidArgument(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = entry.uid
    else:
        entry = next((u for u in users if u.uid == uid), None)
    _check_id(uid, "uid")

    if has_gid:
        gid = _check_id(sc.run_as_group.value, "run_as_group")
    elif group_part:
        num = _numeric(group_part)
        if num is None:
            g = next((g for g in groups if g.name == group_part), None)
            if g is None:
                raise InvalidArgument(f"group {group_part!r} not found in the image's /etc/group")
            num = g.gid
        gid = _check_id(num, "gid")
    else:
        gid = entry.gid if entry is not None else 0

    username = entry.name if entry is not None else ""
    extra = {_check_id(g, "supplemental group") for g in sc.supplemental_groups}
    if sc.supplemental_groups_policy != api_pb2.Strict and username:
        extra |= {g.gid for g in groups if username in g.members}
    extra.discard(gid)
    return ResolvedUser(uid, gid, (gid, *sorted(extra)), username)
