"""Pure CRI list filters, shared by the List* and the *Stats RPCs.

api.proto: ids in filters match by prefix (as the runtimes' truncated-id lookups do); every
label_selector entry must match exactly; an unset field matches everything.
"""

from __future__ import annotations

from typing import Any

from crirt.runtime.model import Container, Sandbox


def _labels_match(labels: Any, selector: Any) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _state_matches(obj: Container | Sandbox, flt: Any) -> bool:
    # Only ListPodSandbox/ListContainers filters carry a state; stats filters do not.
    has_state = "state" in type(flt).DESCRIPTOR.fields_by_name and flt.HasField("state")
    return not has_state or obj.state.to_pb() == flt.state.state


def sandbox_matches(sb: Sandbox, flt: Any | None) -> bool:
    """``flt`` is a PodSandboxFilter or PodSandboxStatsFilter (or None)."""
    if flt is None:
        return True
    return (
        (not flt.id or sb.id.startswith(flt.id))
        and _state_matches(sb, flt)
        and _labels_match(sb.config.labels, flt.label_selector)
    )


def container_matches(c: Container, flt: Any | None) -> bool:
    """``flt`` is a ContainerFilter or ContainerStatsFilter (or None)."""
    if flt is None:
        return True
    return (
        (not flt.id or c.id.startswith(flt.id))
        and (not flt.pod_sandbox_id or c.sandbox_id.startswith(flt.pod_sandbox_id))
        and _state_matches(c, flt)
        and _labels_match(c.config.labels, flt.label_selector)
    )
