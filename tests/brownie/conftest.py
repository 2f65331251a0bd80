"""Brownie test set-up: run with `brownie test` from the repository root (see scripts/setup_brownie.sh).

The helpers here are self-contained (eth-abi / eth-account / eth-utils from brownie's own
environment): they do not import the project's `offchain` package, whose dependencies are not
installed next to brownie. In the main .venv (no brownie) this directory is not collected.
"""

try:  # eth-brownie itself; under pytest a bare `import brownie` may find this very directory
    from brownie import network as _brownie_network  # noqa: F401
except ImportError:  # the main .venv has no brownie: leave these tests to `brownie test`
    collect_ignore_glob = ["*.py"]
else:
    from dataclasses import astuple, dataclass, replace

    import pytest
    from eth_abi import encode
    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak

    UNIT = 10**18
    DAY = 24 * 3600
    CHALLENGE_WINDOW = 3600
    CLAIM_WINDOW = 7 * DAY

    # --- OpenZeppelin StandardMerkleTree over (uint256 index, address account, uint256 amount) ---

    def leaf_hash(index, account, amount):
        """keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))."""
        return keccak(
            keccak(encode(["uint256", "address", "uint256"], [index, str(account), amount]))
        )

    def _hash_pair(a, b):
        return keccak(min(a, b) + max(a, b))

    class MerkleTree:
        """OpenZeppelin StandardMerkleTree (sorted leaves, sorted pairs) of payout leaves.

        `leaves` is a list of (index, account, amount); `root` is bytes32 and `proof(i)` the list
        of bytes32 siblings of `leaves[i]`, as `MerkleProof.verify` expects.
        """

        def __init__(self, leaves):
            if not leaves:
                raise ValueError("a Merkle tree needs at least one leaf")
            self.leaves = list(leaves)
            hashes = [leaf_hash(*value) for value in self.leaves]
            order = sorted(range(len(hashes)), key=lambda i: hashes[i])
            n = len(hashes)
            self.tree = [b""] * (2 * n - 1)
            self._position = {}
            for rank, i in enumerate(order):  # leaves fill the tree's tail, in reverse order
                pos = len(self.tree) - 1 - rank
                self.tree[pos] = hashes[i]
                self._position[i] = pos
            for pos in range(len(self.tree) - 1 - n, -1, -1):
                self.tree[pos] = _hash_pair(self.tree[2 * pos + 1], self.tree[2 * pos + 2])

        @property
        def root(self):
            return self.tree[0]

        @property
        def total(self):
            return sum(amount for _, _, amount in self.leaves)

        def proof(self, i):
            pos = self._position[i]
            siblings = []
            while pos > 0:
                sibling = pos - 1 if pos % 2 == 0 else pos + 1
                siblings.append(self.tree[sibling])
                pos = (pos - 1) // 2
            return siblings

    # --- EIP-712 RoundAllocation, signed k-of-n ---

    ROUND_ALLOCATION_FIELDS = [
        {"name": "campaignId", "type": "uint256"},
        {"name": "roundId", "type": "uint256"},
        {"name": "merkleRoot", "type": "bytes32"},
        {"name": "total", "type": "uint256"},
        {"name": "checkpointHash", "type": "bytes32"},
        {"name": "datasetRoot", "type": "bytes32"},
        {"name": "attributionHash", "type": "bytes32"},
        {"name": "signerSetVersion", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]

    @dataclass(frozen=True)
    class Allocation:
        """CompensationPool.RoundAllocation (field order = the Solidity struct's)."""

        campaignId: int
        roundId: int
        merkleRoot: bytes
        total: int
        checkpointHash: bytes
        datasetRoot: bytes
        attributionHash: bytes
        signerSetVersion: int
        deadline: int

        def as_tuple(self):
            """The struct as brownie passes it to the contract."""
            return astuple(self)

        def replace(self, **changes):
            return replace(self, **changes)

    def eip712_domain(pool):
        """The pool's EIP-712 domain, read from EIP-5267 `eip712Domain()`."""
        _fields, name, version, chain_id, verifying_contract, _salt, _ext = pool.eip712Domain()
        return {
            "name": name,
            "version": version,
            "chainId": int(chain_id),
            "verifyingContract": str(verifying_contract),
        }

    def round_typed_data(pool, allocation):
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "RoundAllocation": ROUND_ALLOCATION_FIELDS,
            },
            "primaryType": "RoundAllocation",
            "domain": eip712_domain(pool),
            "message": dict(
                zip(
                    [f["name"] for f in ROUND_ALLOCATION_FIELDS], allocation.as_tuple(), strict=True
                )
            ),
        }

    def sign_round(pool, allocation, keys):
        """Signatures of `allocation` by `keys`, ordered by ascending signer address (as postRound wants)."""
        signable = encode_typed_data(full_message=round_typed_data(pool, allocation))
        signed = [
            (Account.from_key(k).address, Account.sign_message(signable, k).signature) for k in keys
        ]
        signed.sort(key=lambda pair: int(pair[0], 16))
        return [bytes(sig) for _, sig in signed]

    class Signers:
        """Deterministic oracle signer keys (test-only), sorted by address."""

        def __init__(self, n):
            keys = [
                "0x" + keccak(text=f"ccomp brownie oracle {i}").hex().removeprefix("0x")
                for i in range(n)
            ]
            self.keys = sorted(keys, key=lambda k: int(Account.from_key(k).address, 16))
            self.addresses = [Account.from_key(k).address for k in self.keys]

    # --- fixtures ---

    @pytest.fixture(autouse=True)
    def isolation(fn_isolation):
        """Revert the chain to a snapshot after every test."""

    @pytest.fixture(scope="session")
    def admin(accounts):
        return accounts[0]

    @pytest.fixture(scope="session")
    def guardian(accounts):
        return accounts[1]

    @pytest.fixture(scope="session")
    def sponsors(accounts):
        return accounts[2], accounts[3]

    @pytest.fixture(scope="session")
    def holders(accounts):
        return accounts[4], accounts[5], accounts[6]

    @pytest.fixture(scope="session")
    def relayer(accounts):
        return accounts[7]

    @pytest.fixture(scope="session")
    def signers():
        """Three oracle signers; campaigns below need two of them (2-of-3)."""
        return Signers(3)

    @pytest.fixture
    def token(TestToken, admin, sponsors):
        t = TestToken.deploy({"from": admin})
        for s in sponsors:
            t.mint(s, 1_000 * UNIT, {"from": s})
        return t

    @pytest.fixture
    def pool(CompensationPool, admin):
        return CompensationPool.deploy(admin, {"from": admin})

    @pytest.fixture
    def campaign_params(chain, token, guardian, signers):
        """CampaignParams (a dict in struct order): 2-of-3 signers, 3 rounds, posting for 1 day."""

        def make(**changes):
            params = {
                "token": token.address,
                "guardian": guardian.address,
                "signers": signers.addresses,
                "threshold": 2,
                "numRounds": 3,
                "roundCap": 100 * UNIT,
                "holderCap": 50 * UNIT,
                "challengeWindow": CHALLENGE_WINDOW,
                "claimWindow": CLAIM_WINDOW,
                "postingDeadline": chain.time() + DAY,
            }
            params.update(changes)
            return params

        return make

    @pytest.fixture
    def create_campaign(pool, admin, campaign_params):
        """Creates a campaign and returns its id."""

        def create(**changes):
            tx = pool.createCampaign(tuple(campaign_params(**changes).values()), {"from": admin})
            return tx.events["CampaignCreated"]["campaignId"]

        return create

    @pytest.fixture
    def funded_campaign(pool, token, sponsors, create_campaign):
        """A 2-of-3 ERC-20 campaign funded 120 by sponsor 0 and 80 by sponsor 1; returns its id."""
        cid = create_campaign()
        for sponsor, amount in zip(sponsors, (120 * UNIT, 80 * UNIT), strict=True):
            token.approve(pool, amount, {"from": sponsor})
            pool.fund(cid, amount, {"from": sponsor})
        return cid

    @pytest.fixture
    def allocation(chain, pool):
        """Builds the RoundAllocation of `tree` for round `round_id` of campaign `cid`."""

        def make(cid, round_id, tree, **changes):
            fields = {
                "campaignId": cid,
                "roundId": round_id,
                "merkleRoot": tree.root,
                "total": tree.total,
                "checkpointHash": keccak(text=f"checkpoint {cid}/{round_id}"),
                "datasetRoot": keccak(text=f"dataset {cid}"),
                "attributionHash": keccak(text=f"attribution {cid}/{round_id}"),
                "signerSetVersion": pool.getCampaign(cid)["signerSetVersion"],
                "deadline": chain.time() + DAY,
            }
            fields.update(changes)
            return Allocation(**fields)

        return make
