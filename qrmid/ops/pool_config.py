"""The ``pool`` resource type's config keys and the checks that tie a pool to the resources it names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from qrmid.backends.registry import ResourceConfig
from qrmid.backends.settings import NAME_PATTERN, ResourceSettings


class AtKey(ValueError):
    """A fault of one key of the config file; the message says what is wrong with it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class PoolSettings(ResourceSettings):
    """Config keys of a ``pool`` resource: its tasks run on one of its member resources."""

    type: Literal["pool"]
    members: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        max_length=64, description="the member resources, in the pool's order (configured resources, not pools)")
    policy: Literal["least-busy", "ordered"] = Field("least-busy", description="least-busy: the member where a task "
                                                     "starts first; ordered: the first member online and not drained, "
                                                     "the next ones only while it is not")
    fallback: str = Field("", description="a member used only for tasks that allow a fallback, when no other member "
                          "is online, undrained and free of reservations and maintenance; empty: none")


ResourceEntry = Annotated[ResourceConfig | PoolSettings, Field(discriminator="type")]


def check_pools(resources: Sequence[ResourceEntry]) -> None:
    """AtKey when a pool names no member, a resource that is not configured or is a pool, a member twice, or a
    fallback that is not one of its members."""
    names = {resource.name: resource for resource in resources}
    for index, pool in enumerate(resources):
        if not isinstance(pool, PoolSettings):
            continue
        where = f"resources[{index}]"
        regular = [member for member in pool.members if member != pool.fallback]
        if not regular:
            besides = " besides its fallback" if pool.members else ""
            raise AtKey(f"{where}.members", f"pool {pool.name!r} has no members{besides}: list the resources its "
                        "tasks run on")
        for member in pool.members:
            if member not in names:
                known = ", ".join(name for name, settings in names.items() if not isinstance(settings, PoolSettings))
                raise AtKey(f"{where}.members", f"pool {pool.name!r} names {member!r}, which is not a configured "
                            f"resource (resources: {known or 'none'})")
            if isinstance(names[member], PoolSettings):
                raise AtKey(f"{where}.members", f"pool {pool.name!r} names pool {member!r}: a pool's members are "
                            "resources, not pools; list that pool's members instead")
        if len(set(pool.members)) != len(pool.members):
            raise AtKey(f"{where}.members", f"pool {pool.name!r} lists a member twice: {', '.join(pool.members)}")
        if pool.fallback and pool.fallback not in pool.members:
            raise AtKey(f"{where}.fallback", f"{pool.fallback!r} is not a member of pool {pool.name!r}: add it to "
                        f"members (members: {', '.join(pool.members)})")


def dispatch_groups(resources: Sequence[ResourceEntry]) -> dict[str, str]:
    """The resources a cluster member dispatches only together with another (cluster mode): each pool and member
    resource, mapped to the first configured pool of its group (pools sharing a member form one group); that pool
    is elected, and the rest of its group follow its dispatcher."""
    order = {resource.name: index for index, resource in enumerate(resources)}
    heads: dict[str, str] = {}
    for pool in resources:
        if not isinstance(pool, PoolSettings):
            continue
        group = {pool.name, *pool.members}
        merged = {heads[name] for name in group if name in heads}
        head = min([*merged, pool.name], key=order.__getitem__)
        for name, other in heads.items():
            if other in merged:
                heads[name] = head
        heads.update(dict.fromkeys(group, head))
    return {name: head for name, head in heads.items() if name != head}
