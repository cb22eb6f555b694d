"""Component ids of the page, one ``StrEnum`` per room, and the builders of pattern-matching ids.

Every layout and callback names components through these constants; no other file spells an id.
The string values are what the browser sees (tests and ``bench/`` address them by value).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Shell(StrEnum):
    """The page shell: location, shared stores, header, banner."""

    URL = "url"
    CONTEXT = "context"            # AnalysisContext: image set, pool key, groups, analysis key
    POOL_RESULT = "pool-result"    # PoolResult written by the pool jobs
    ANALYSIS_RESULT = "analysis-result"  # AnalysisResult written by Analyze
    URL_VIEW = "url-view"          # ViewState read from a shared URL (once per page load)
    MODEL_INFO = "model-info"
    CONTEXT_INFO = "context-info"
    NOTICE = "notice"
    EXPORT_JSON = "export-json"
    DOWNLOAD = "download"


class Images(StrEnum):
    """Image sets, uploads, filters, thumbnails, selection, Generate."""

    IMAGE_SET = "image-set"
    UPLOAD = "upload"
    UPLOAD_REPORT = "upload-report"
    FILTER_CLASS = "filter-class"
    FILTER_KIND = "filter-kind"
    FILTER_CORRECT = "filter-correct"
    SORT_SCORE = "sort-score"
    LIST = "image-list"
    SELECTION = "selection"
    SELECTION_INFO = "selection-info"
    CLEAR_SELECTION = "clear-selection"
    GEN_METHOD = "gen-method"
    GEN_EPS = "gen-eps"
    GEN_STEPS = "gen-steps"
    GEN_SOURCE = "gen-source"
    POOL_STATUS = "pool-status"


class Groups(StrEnum):
    """Groups, presets and Analyze."""

    GROUPS = "groups"
    NAME = "group-name"
    ADD = "add-group"
    COMPARE_PREDICTED = "compare-predicted"
    PRESET = "preset"
    VIEW = "groups-view"
    CLEAR = "clear-groups"
    SUMMARY = "analysis-summary"
    HINT = "groups-hint"
    METHOD = "datapath-method"


class Layer(StrEnum):
    """Layer level: the segmented DAG and its overview."""

    STAT = "stat"
    LAM = "lam"
    FIT = "fit-graph"
    COLLAPSE = "collapse-group"
    GRAPH = "layer-graph"
    OVERVIEW = "layer-overview"
    LEGEND = "layer-legend"
    TITLE = "layer-title"
    CUT = "cut"                  # LayerCut store: visible nodes of the analysis it belongs to
    FOCUS = "focus-layer"        # LayerFocus store


class Fmap(StrEnum):
    """Feature-map level: treemaps and faithfulness."""

    TITLE = "fmap-title"
    COLOR = "fmap-color"
    K = "fmap-k"
    PIN = "pin-layer"
    UNPIN = "unpin-layers"
    PINNED = "pinned"
    TREEMAP = "fmap-treemap"
    CURVES = "faithfulness-curves"
    FAITH_RESULT = "faithfulness-result"


class Neuron(StrEnum):
    """Neuron level: heat maps, top patches, discrepancy maps."""

    TITLE = "neuron-title"
    FOCUS = "focus-map"          # MapFocus store
    OVERLAY = "overlay"
    HEATMAPS = "neuron-heatmaps"
    PATCHES = "top-patches"
    STRIDE = "disc-stride"
    MAPS = "discrepancy-maps"
    DISC_RESULT = "discrepancy-result"


class Job(StrEnum):
    """Background jobs; each has the widgets of :class:`JobIds`."""

    POOL = "pool"
    GENERATE = "generate"
    ANALYZE = "analyze"
    DISCREPANCY = "discrepancy"
    FAITHFULNESS = "faithfulness"


@dataclass(frozen=True)
class JobIds:
    """The widget ids of one job: start button, cancel button, progress bar, status text, error line."""

    job: Job

    @property
    def button(self) -> str:
        """The button that starts the job."""
        return str(self.job)

    @property
    def cancel(self) -> str:
        """The button that stops it."""
        return f"cancel-{self.job}"

    @property
    def progress(self) -> str:
        """``<progress>`` element."""
        return f"{self.job}-progress"

    @property
    def status(self) -> str:
        """Text beside the bar."""
        return f"{self.job}-status"

    @property
    def box(self) -> str:
        """Container shown while the job runs."""
        return f"{self.job}-progress-box"

    @property
    def error(self) -> str:
        """One-line failure message."""
        return f"{self.job}-error"


class Pattern(StrEnum):
    """``type`` of pattern-matching ids."""

    THUMB = "thumb"
    REMOVE_GROUP = "rm-group"


def thumb_id(item_id: str) -> dict[str, Any]:
    """Id of the thumbnail card of a pool item."""
    return {"type": str(Pattern.THUMB), "index": item_id}


def remove_group_id(name: str) -> dict[str, Any]:
    """Id of the remove button of a group."""
    return {"type": str(Pattern.REMOVE_GROUP), "index": name}
