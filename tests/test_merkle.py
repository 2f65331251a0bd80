"""PayoutTree: OpenZeppelin StandardMerkleTree compatibility, validation, property tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offchain.allocation.merkle import PayoutTree, leaf_hash, verify_proof
from offchain.errors import AllocationError

ROOT = Path(__file__).resolve().parents[1]
OZ_MERKLE = ROOT / "node_modules" / "@openzeppelin" / "merkle-tree"

ADDRESSES = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
]


def _entries(n: int) -> list[tuple[int, str, int]]:
    return [(i * 3 + 1, ADDRESSES[i % len(ADDRESSES)], (i + 1) * 10**17 + i) for i in range(n)]


# -- OpenZeppelin JS compatibility ---------------------------------------------------------------

_JS = """
const { StandardMerkleTree } = require(process.argv[1]);
const values = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const tree = StandardMerkleTree.of(values, ['uint256', 'address', 'uint256']);
const proofs = values.map((_, i) => tree.getProof(i));
process.stdout.write(JSON.stringify({ root: tree.root, dump: tree.dump(), proofs }));
"""


def _oz_js_tree(entries: list[tuple[int, str, int]]) -> dict:
    values = [[str(i), a, str(amt)] for i, a, amt in entries]
    out = subprocess.run(
        ["node", "-e", _JS, str(OZ_MERKLE)],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


needs_oz_js = pytest.mark.skipif(
    shutil.which("node") is None or not (OZ_MERKLE / "package.json").is_file(),
    reason="needs node and npm @openzeppelin/merkle-tree (run `npm ci` in the project root)",
)


@needs_oz_js
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_root_and_proofs_equal_openzeppelin_js_library(n):
    entries = _entries(n)
    ours = PayoutTree.build(entries)
    theirs = _oz_js_tree(entries)
    assert ours.root == theirs["root"]
    assert [ours.proof(i) for i, _, _ in entries] == theirs["proofs"]
    assert ours.to_json() == theirs["dump"]


@needs_oz_js
def test_from_json_loads_openzeppelin_js_dump():
    entries = _entries(6)
    dump = _oz_js_tree(entries)["dump"]
    tree = PayoutTree.from_json(dump)
    assert tree.root == PayoutTree.build(entries).root
    assert tree.entries == tuple(entries)


# -- structure -----------------------------------------------------------------------------------


def test_leaf_hash_is_double_keccak_of_abi_encoding():
    account = ADDRESSES[0]
    expected = keccak(keccak(encode(["uint256", "address", "uint256"], [7, account, 99])))
    assert leaf_hash(7, account, 99) == expected


def test_single_leaf_tree_root_is_the_leaf_and_proof_is_empty():
    tree = PayoutTree.build([(0, ADDRESSES[0], 5)])
    assert tree.root == "0x" + leaf_hash(0, ADDRESSES[0], 5).hex()
    assert tree.proof(0) == []
    assert tree.verify((0, ADDRESSES[0], 5), [])


def test_tree_layout_matches_standard_merkle_tree():
    tree = PayoutTree.build(_entries(5))
    assert len(tree.tree) == 2 * 5 - 1
    leaves = sorted(leaf_hash(*e) for e in tree.entries)
    assert [tree.tree[len(tree.tree) - 1 - i] for i in range(5)] == leaves
    for i in range(len(tree.tree) - 5):
        a, b = sorted((tree.tree[2 * i + 1], tree.tree[2 * i + 2]))
        assert tree.tree[i] == keccak(a + b)


def test_total_wei_sums_amounts_and_lowercase_accounts_are_checksummed():
    tree = PayoutTree.build([(0, ADDRESSES[0].lower(), 3), (1, ADDRESSES[1], 4)])
    assert tree.total_wei == 7
    assert tree.entries[0][1] == ADDRESSES[0]


def test_json_round_trip_preserves_tree():
    tree = PayoutTree.build(_entries(7))
    loaded = PayoutTree.from_json(json.loads(json.dumps(tree.to_json())))
    assert loaded == tree
    assert loaded.proof(4) == tree.proof(4)


def test_from_json_rejects_tampered_dump():
    dump = PayoutTree.build(_entries(4)).to_json()
    dump["values"][0]["value"][2] = "1"
    with pytest.raises(AllocationError, match="inconsistent"):
        PayoutTree.from_json(dump)
    with pytest.raises(AllocationError, match="format"):
        PayoutTree.from_json({**dump, "format": "simple-v1"})


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "at least one"),
        ([(0, ADDRESSES[0], 1), (0, ADDRESSES[1], 2)], "duplicate index 0"),
        ([(0, "0x1234", 1)], "not a valid address"),
        ([(0, ADDRESSES[0].replace("f39F", "F39f"), 1)], "checksum"),
        ([(0, ADDRESSES[0], -1)], "amount"),
        ([(0, ADDRESSES[0], 1.5)], "amount"),
        ([(0, ADDRESSES[0], True)], "amount"),
        ([(-1, ADDRESSES[0], 1)], "index"),
        ([(0, ADDRESSES[0])], "not \\(index, account, amount_wei\\)"),
    ],
)
def test_build_rejects_invalid_entries(entries, message):
    with pytest.raises(AllocationError, match=message):
        PayoutTree.build(entries)


def test_proof_raises_for_unknown_index():
    with pytest.raises(AllocationError, match="no payout with index 99"):
        PayoutTree.build(_entries(3)).proof(99)


# -- properties ----------------------------------------------------------------------------------

_address = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address("0x" + b.hex()))
_amount = st.integers(min_value=0, max_value=2**256 - 2)


@st.composite
def _payouts(draw):
    indices = draw(st.lists(st.integers(0, 2**64), min_size=1, max_size=40, unique=True))
    return [(i, draw(_address), draw(_amount)) for i in indices]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=_payouts(), data=st.data())
def test_every_proof_verifies_and_tampered_amount_does_not(entries, data):
    tree = PayoutTree.build(entries)
    for entry in entries:
        proof = tree.proof(entry[0])
        assert tree.verify(entry, proof)
        assert verify_proof(tree.root, leaf_hash(*entry), proof)
    index, account, amount = data.draw(st.sampled_from(entries))
    delta = data.draw(st.integers(min_value=1, max_value=10**18))
    assert not tree.verify((index, account, amount + delta), tree.proof(index))


@settings(max_examples=30, deadline=None)
@given(entries=_payouts())
def test_root_does_not_depend_on_entry_order(entries):
    assert PayoutTree.build(entries).root == PayoutTree.build(list(reversed(entries))).root
