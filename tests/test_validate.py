"""mhsa_lib._validate: the shared argument checks. Every message names the argument, what came
and what was expected; the modules raise these same messages."""

import pytest
import torch

import mhsa_lib
from mhsa_lib import _validate as v

pytestmark = pytest.mark.usefixtures("torch_seed")


@pytest.mark.parametrize("bad", [0, -2, 1.0, True, "3", None])
def test_positive_int(bad):
    with pytest.raises(ValueError, match=rf"^n_rep: expected a positive int, got {bad!r}$".replace("(", r"\(")):
        v.check_positive_int("n_rep", bad)
    v.check_positive_int("n_rep", 1)


def test_count_allows_zero_but_not_negative_or_bool():
    v.check_count("seq_len", 0)
    for bad in (-1, False, 2.0):
        with pytest.raises(ValueError, match=rf"^seq_len: expected a non-negative int, got {bad!r}$"):
            v.check_count("seq_len", bad)


def test_choice():
    v.check_choice("activation", "gelu", ("relu", "gelu"))
    with pytest.raises(ValueError, match=r"^activation: expected one of \('relu', 'gelu'\), got 'tanh'$"):
        v.check_choice("activation", "tanh", ["relu", "gelu"])
    with pytest.raises(ValueError, match=r"^positional: expected one of \('a',\), got None$"):
        v.check_choice("positional", None, ("a",))


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.1"])
def test_dropout(bad):
    with pytest.raises(ValueError, match=rf"^dropout: expected a probability in \[0, 1\), got {bad!r}$"):
        v.check_dropout(bad)
    v.check_dropout(0)
    v.check_dropout(0.999)


def test_tensor_checks():
    with pytest.raises(ValueError, match=r"^x: expected a torch.Tensor of shape \(B, T, D\), got list$"):
        v.check_tensor("x", [1.0], 3, "(B, T, D)")
    with pytest.raises(ValueError, match=r"^x: expected a 3-D tensor \(B, T, D\), got shape \(2, 3\)$"):
        v.check_tensor("x", torch.zeros(2, 3), 3, "(B, T, D)")
    with pytest.raises(ValueError, match=r"^x: expected a floating-point tensor, got dtype torch.int64$"):
        v.check_floating("x", torch.arange(3))
    with pytest.raises(ValueError, match=r"^dim: expected an axis in \[-1, 0\] for a 1-D input, got 1$"):
        v.check_dim("dim", 1, 1)
    with pytest.raises(ValueError, match=r"^kv: expected a 3-D tensor \(B, T, D\) with D=d_model=8, got shape \(2, 3, 4\)$"):
        v.check_input("kv", torch.zeros(2, 3, 4), 8)


def test_heads():
    v.check_heads(12, 3, 1)
    with pytest.raises(ValueError, match=r"^d_model: expected a multiple of num_heads=5 .* got d_model=12$"):
        v.check_heads(12, 5)
    with pytest.raises(ValueError, match=r"^num_heads: expected a multiple of num_kv_heads=2 .* got num_heads=3$"):
        v.check_heads(12, 3, 2)
    with pytest.raises(ValueError, match=r"^num_kv_heads: expected a positive int, got 0$"):
        v.check_heads(12, 3, 0)


def test_qkv_with_shared_heads_lets_the_head_axes_differ():
    q, k = torch.randn(2, 6, 5, 4), torch.randn(2, 2, 7, 4)
    v.check_qkv(q, k, k, shared_kv_heads=True)
    with pytest.raises(ValueError, match=r"^q, k, v: expected leading \(batch\) dimensions that broadcast"):
        v.check_qkv(q, k, k)
    with pytest.raises(ValueError, match=r"^q, k, v: expected leading"):
        v.check_qkv(q, torch.randn(3, 2, 7, 4), torch.randn(3, 2, 7, 4), shared_kv_heads=True)
    with pytest.raises(ValueError, match=r"^v: expected dtype torch.float32 like q, got torch.float64$"):
        v.check_qkv(q, k, k.double(), shared_kv_heads=True)


def test_mask_messages():
    shape = (2, 3, 5, 7)
    v.check_mask(torch.ones(5, 7, dtype=torch.bool), shape)
    with pytest.raises(ValueError, match=r"^mask: expected a bool torch.Tensor, got list$"):
        v.check_mask([[True]], shape)
    with pytest.raises(ValueError, match=r"^mask: expected dtype torch.bool \(True = may attend\), got torch.float32; "):
        v.check_mask(torch.ones(5, 7), shape)
    with pytest.raises(ValueError, match=r"^mask: expected device meta like q, got cpu$"):
        v.check_mask(torch.ones(5, 7, dtype=torch.bool), shape, device=torch.device("meta"))
    with pytest.raises(ValueError, match=r"^mask: expected a shape broadcastable to the scores \(\.\.\., T, S\) = \(2, 3, 5, 7\), got \(7, 5\)$"):
        v.check_mask(torch.ones(7, 5, dtype=torch.bool), shape)
    with pytest.raises(ValueError, match=r"got \(1, 2, 3, 5, 7\)$"):  # more axes than the scores
        v.check_mask(torch.ones(1, *shape, dtype=torch.bool), shape)


def test_heads_mask_reads_3d_as_batch_time_key():
    m = torch.rand(2, 5, 7) > 0.5
    out = v.heads_mask(m, (2, 3, 5, 7))
    assert out.shape == (2, 1, 5, 7) and torch.equal(out[:, 0], m)
    four = torch.ones(2, 3, 5, 7, dtype=torch.bool)
    assert v.heads_mask(four, (2, 3, 5, 7)) is four
    with pytest.raises(ValueError, match=r"^mask: expected a shape broadcastable to \(B, H, T, S\) = \(2, 3, 5, 7\) \(or a 3-D \(B, T, S\)\), got \(3, 5, 7\)$"):
        v.heads_mask(torch.ones(3, 5, 7, dtype=torch.bool), (2, 3, 5, 7))


@pytest.mark.parametrize(
    "call, match",
    [  # the modules raise the shared messages
        (lambda: mhsa_lib.causal_mask(-1), r"^seq_len_q: expected a non-negative int, got -1$"),
        (lambda: mhsa_lib.split_heads(torch.zeros(1, 2, 4), True), r"^num_heads: expected a positive int, got True$"),
        (lambda: mhsa_lib.FeedForward(4, 0), r"^d_ff: expected a positive int, got 0$"),
        (lambda: mhsa_lib.FeedForward(4, 8, dropout=1.0), r"^dropout: expected a probability in \[0, 1\), got 1.0$"),
        (lambda: mhsa_lib.LayerNorm(2.0), r"^d_model: expected a positive int, got 2.0$"),
        (lambda: mhsa_lib.GroupedQueryAttention(12, 0, 1), r"^num_heads: expected a positive int, got 0$"),
        (lambda: mhsa_lib.StaticKVCache(1, 2, 0, 4), r"^max_seq_len: expected a positive int, got 0$"),
        (lambda: mhsa_lib.kv_cache_bytes(1, 1, -3, 1, 1), r"^num_layers: expected a non-negative int, got -3$"),
        (lambda: mhsa_lib.sinusoidal_positional_encoding(4, -8), r"^d_model: expected a positive int, got -8$"),
        (lambda: mhsa_lib.TinyTransformer(5, 8, 2, 8, 1, 4, positional="rope"), r"^positional: expected one of \('sinusoidal', 'learned', 'none'\), got 'rope'$"),
        (lambda: mhsa_lib.attend_heads(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4).double()), r"^v: expected dtype torch.float32 like q, got torch.float64$"),
    ],
)
def test_modules_raise_the_shared_messages(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_broadcast_shapes_agrees_with_torch():
    """The library's own broadcasting rule (torch.broadcast_shapes imports sympy on first use,
    seconds in a fresh kernel) gives torch's answer, or refuses where torch refuses."""
    import random

    import torch

    from mhsa_lib._validate import broadcast_shapes

    rng = random.Random(0)
    for _ in range(3000):
        shapes = [tuple(rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 3))]
        try:
            want = tuple(torch.broadcast_shapes(*shapes))
        except RuntimeError:
            want = None
        try:
            got = broadcast_shapes(*shapes)
        except RuntimeError:
            got = None
        assert got == want, shapes
