"""Type stubs of the compiled binding ``fastlogits._core`` (see ``_core.pyx`` and its ``_core_*.pxi``).

An operand spec is ``(array, dtype_code, s0, s1, sc)`` as built by ``fastlogits._layout``;
a grid is ``(n0, n1, c)``. Kernels return None and raise the exception of their non-zero
status (``status_error``: ``MemoryError`` when their scratch cannot be allocated,
``BadTargetError`` for an invalid binary target); ``cross_entropy`` returns its sum states
(``_CeSums``), ``bce`` sets a sum state and ``score`` merges its sum states into ``acc``
(states: see ``fastlogits._rsum``).
"""
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

# (array, dtype code, s0, s1, sc), and a sixth item 1 for an output just allocated (_layout.fresh)
_Spec = Union[Tuple[np.ndarray, int, int, int, int], Tuple[np.ndarray, int, int, int, int, int]]
_Grid = Tuple[int, int, int]
# cross_entropy's result: ((4, RSUM_WORDS) sum states ce, z, d1, d2; n_valid; first_bad), see fl_ce_result
_CeSums = Tuple[np.ndarray, int, int]

def data_address(a: np.ndarray) -> int: ...

class BadTargetError(ValueError): ...

def status_error(status: int) -> Exception: ...

def softmax(x: _Spec, y: _Spec, grid: _Grid, mode: int) -> None: ...
def row_reduce(x: _Spec, out: _Spec, grid: _Grid, what: int) -> None: ...
def elementwise(x: _Spec, y: _Spec, grid: _Grid, op: int) -> None: ...
def argmax(x: _Spec, out: _Spec, grid: _Grid) -> None: ...
def topk(x: _Spec, values: _Spec, indices: _Spec, grid: _Grid, k: int) -> None: ...
def threshold(x: _Spec, out: _Spec, grid: _Grid, t: float) -> None: ...
def stream_read(src: np.ndarray) -> float: ...
def stream_copy(dst: np.ndarray, src: np.ndarray) -> None: ...

PROBE_ELEMENTS: int
PROBE_OPS: Dict[str, int]

def math_probe(what: str, reps: int) -> float: ...

def bce(
    x: _Spec,
    y: _Spec,
    w: Optional[_Spec],
    pw: Optional[_Spec],
    loss: Optional[_Spec],
    grad: Optional[_Spec],
    grid: _Grid,
    kind: int,
    alpha: float,
    gamma: float,
    grad_scale: float,
    check_target: bool,
    total: Optional[np.ndarray],
    per_element: bool,
) -> None: ...
def check_binary_target(y: _Spec, grid: _Grid) -> None: ...
def cross_entropy(
    x: _Spec,
    target: _Spec,
    sample_weight: Optional[_Spec],
    loss: Optional[_Spec],
    grad: Optional[_Spec],
    grid: _Grid,
    weight: Optional[np.ndarray],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    grad_scale_ce: float,
    grad_scale_z: float,
    targets_only: bool,
) -> _CeSums: ...
def score(
    x: _Spec,
    target: _Spec,
    weight: Optional[_Spec],
    grid: _Grid,
    mode: int,
    want_rank: bool,
    k: int,
    bins: int,
    temperature: float,
    sums: int,
    acc: np.ndarray,
    ignore_index: int,
    per_class: int,
    auc_bins: int,
    cm: Optional[np.ndarray],
    cmw: Optional[np.ndarray],
    pc: Optional[np.ndarray],
    pcn: Optional[np.ndarray],
    pcf: Optional[np.ndarray],
) -> None: ...
def score_pc_fold(
    per_class: int, bins: int, auc_bins: int, pc: np.ndarray, pcn: np.ndarray, pcf: np.ndarray
) -> None: ...
def sequence_scores(
    x: _Spec,
    tokens: _Spec,
    grid: _Grid,
    ignore_index: int,
    temperature: float,
    logprob: np.ndarray,
    count: np.ndarray,
    greedy: np.ndarray,
) -> int: ...
RSUM_WORDS: int

def rsum_init(states: np.ndarray) -> None: ...
def rsum_check(states: np.ndarray) -> int: ...
def rsum_merge(into: np.ndarray, other: np.ndarray) -> None: ...
def rsum_value(states: np.ndarray, out: np.ndarray) -> None: ...
def rsum_add(state: np.ndarray, values: np.ndarray) -> None: ...
def isa_name() -> str: ...
def isa_best() -> str: ...
def isa_select(name: str) -> int: ...
def stream_policy() -> Tuple[int, int, int, bool]: ...
def stream_default_policy() -> Tuple[int, int, int, bool]: ...
def set_stream_policy(min_bytes: int, min_row_bytes: int, min_store_bytes: int, in_place_rows: bool) -> None: ...
def subnormal_policy() -> bool: ...
def subnormal_default_policy() -> bool: ...
def set_subnormal_policy(plain: int) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def default_num_threads() -> int: ...
def build_info() -> Dict[str, Any]: ...

# ---- decoding (API section 8) ----
# settings: specs of (temperature, top_k, top_p, min_p, min_keep); keys: (seed, offset, stream)
_Settings = Tuple[_Spec, _Spec, _Spec, _Spec, _Spec]

def filter_logits(x: _Spec, settings: _Settings, out: _Spec, grid: _Grid) -> None: ...
def sample(
    x: _Spec,
    settings: _Settings,
    keys: Tuple[_Spec, _Spec, Optional[_Spec]],
    tokens: _Spec,
    logprob: Optional[_Spec],
    grid: _Grid,
) -> int: ...
def token_logprobs(
    x: _Spec,
    tokens: _Spec,
    temperature: _Spec,
    logprob: _Spec,
    rank: Optional[_Spec],
    top_logprob: Optional[_Spec],
    top_token: Optional[_Spec],
    grid: _Grid,
    top_n: int,
) -> int: ...
def apply_penalties(x: _Spec, prev: _Spec, penalties: Tuple[_Spec, _Spec, _Spec], grid: _Grid, length: int) -> int: ...
def philox4x32_10(counter: Tuple[int, int, int, int], key: Tuple[int, int]) -> Tuple[int, int, int, int]: ...
