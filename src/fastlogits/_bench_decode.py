"""The decoding cases of the benchmark table (fastlogits.bench): sample and token_logprobs on a
serving batch of a 128k vocabulary, float32 and bfloat16.

Each case has two kinds of peers: PyTorch implementing the same work the way serving stacks
do on the CPU (``transformers``' warpers written with plain torch ops, then
``torch.multinomial``; ``log_softmax`` + ``gather`` + ``topk`` for log-probabilities), and a
``baseline``: fastlogits' own kernel doing the least that work implies on the same logits
(one ``logsumexp`` for sample, ``cross_entropy(reduction="none")`` for token_logprobs), so the
table shows how many logsumexps a draw costs.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np

import fastlogits as fl
from fastlogits import reference as ref

# the decoding shape: a batch of 64 requests over Llama 3's vocabulary
DECODE_SHAPES = [(64, 128256)]
CHAIN: Dict[str, Any] = dict(top_k=50, top_p=0.9, min_p=0.05)
TOP_N = 5


def _torch_chain(torch: Any, logits: Any) -> Any:
    """TopK, TopP and MinP as transformers' warpers compute them (a sort of the row for top-p),
    in float32 as generate() casts the logits, then one multinomial draw per row."""
    x = logits.float()
    kth = torch.topk(x, CHAIN["top_k"], dim=-1).values[..., -1:]
    x = x.masked_fill(x < kth, float("-inf"))
    sorted_x, order = torch.sort(x, descending=False)
    cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1 - CHAIN["top_p"]
    drop[..., -1:] = False
    x = x.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = x.softmax(dim=-1)
    drop = probs < CHAIN["min_p"] * probs.amax(dim=-1, keepdim=True)
    drop.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    x = x.masked_fill(drop, float("-inf"))
    return torch.multinomial(x.softmax(dim=-1), 1)


def _torch_logprobs(torch: Any, logits: Any, target: Any) -> Any:
    lp = torch.log_softmax(logits.float(), dim=-1)
    return lp.gather(1, target[:, None]), torch.topk(lp, TOP_N, dim=-1)


def _check_draws(got: Any, want: Any) -> None:
    """Each drawn token lies in the filtered support and its log-probability is the
    reference's (want: the reference's filtered log-softmax of the rows)."""
    tokens, lp = got
    tokens = np.asarray(tokens)
    if tokens.min() < 0 or tokens.max() >= want.shape[1]:
        raise AssertionError("result differs from the reference (a token out of range)")
    expected = want[np.arange(tokens.size), tokens]
    if not (np.isfinite(expected).all() and np.allclose(lp, expected, rtol=1e-4, atol=1e-5)):
        raise AssertionError("result differs from the reference (a token outside the filtered support, or a "
                             "wrong log-probability)")


def _filtered_log_softmax(x: np.ndarray) -> np.ndarray:
    f = np.asarray(ref.filter_logits(x.astype(np.float32), **CHAIN), dtype=np.float64)
    return np.asarray(f - ref.logsumexp(f, keepdims=True))


def decode_ops(op_type: Any, torch: Any, close: Callable[[float], Callable[[Any, Any], None]]) -> List[Any]:
    """The decoding Ops of the table (op_type: bench.Op; close: bench._close)."""
    ops = []
    for dtype, tag in (("float32", ""), ("bfloat16", "/bf16")):
        peers: Dict[str, Callable[[Any], Any]] = {"baseline": lambda d: fl.logsumexp(d.x)}
        if torch is not None:
            peers["torch"] = lambda d: _torch_chain(torch, d.torch_x)
        ops.append(op_type(
            "sample" + tag, "none", "read",
            lambda d: fl.sample(d.x, seed=1, return_logprobs=True, **CHAIN), None,
            lambda d: _filtered_log_softmax(d.x), peers, _check_draws, dtype, DECODE_SHAPES))
        peers = {"baseline": lambda d: fl.cross_entropy(d.x, d.target, reduction="none")}
        if torch is not None:
            peers["torch"] = lambda d: _torch_logprobs(torch, d.torch_x, d.torch_target)
        ops.append(op_type(
            "token_logprobs" + tag, "class", "read",
            lambda d: fl.token_logprobs(d.x, d.target, top_n=TOP_N), None,
            lambda d: ref.token_logprobs(d.x.astype(np.float32), d.target, top_n=TOP_N), peers,
            close(1e-5), dtype, DECODE_SHAPES))
    return ops
