# pragma version 0.4.3
# pragma evm-version cancun
"""
@title DeRelayL's shared part: types, events, storage and the checks both contracts run
@notice A module: DeRelayL.vy and TestAndSettle.vy each ``initializes: rules`` and declare no
        storage of their own, so both lay out storage the same way and TestAndSettle's code
        runs on DeRelayL's storage through DELEGATECALL (see DeRelayL.vy).
@dev    Costs that do not grow with lineage depth: lineage rewards above the most recent common
        ancestor of the live models are paid lazily (a per-participant count of trunk models
        times an accumulator, like staking rewards), so a settlement walks only the unmerged
        generations. Orders are verified, not sorted, where the block lists items (bids,
        commitments: O(n)); the settlement ranks the round's models with an in-memory heap.
"""

MAX_PARTICIPANTS: constant(uint256) = 1024
WORDS: constant(uint256) = 4  # bitmap words: MAX_PARTICIPANTS / 256
MAX_ITEMS: constant(uint256) = 512  # bids of one kind, commitments, live models: <= the cap
MAX_JOINS: constant(uint256) = 64
MAX_TESTERS: constant(uint256) = 16
MAX_MULTIPLIERS: constant(uint256) = 256
MAX_KEPT: constant(uint256) = 1024
MAX_CO_SCORES: constant(uint256) = MAX_ITEMS * (MAX_TESTERS - 1)
MAX_APPEAL_SCORES: constant(uint256) = MAX_ITEMS * MAX_TESTERS
MAX_FHE_KEY: constant(uint256) = 4096
M32: constant(uint256) = 2**32 - 1
M64: constant(uint256) = 2**64 - 1
BIAS: constant(int256) = 2**63

# phases (= derelayl.protocol.types.Phase)
DEPOSIT: constant(uint256) = 0
COMMIT: constant(uint256) = 1
TEST: constant(uint256) = 2
SETTLE: constant(uint256) = 3

# draw purposes (= derelayl.protocol.beacon), 8 bytes each
ROLES: constant(bytes8) = 0x726f6c6573000000
MINERS: constant(bytes8) = 0x6d696e6572730000
TESTERS: constant(bytes8) = 0x7465737465727300
AUCTION: constant(bytes8) = 0x61756374696f6e00
SETTLE_KEY: constant(bytes8) = 0x736574746c650000
APPEAL: constant(bytes8) = 0x61707065616c0000

# message tags for signatures (derelayl.evm.signing)
TAG_BID: constant(bytes32) = keccak256("derelayl/bid")
TAG_COMMIT: constant(bytes32) = keccak256("derelayl/commit")
TAG_SCORES: constant(bytes32) = keccak256("derelayl/scores")
TAG_JOIN: constant(bytes32) = keccak256("derelayl/join")
TAG_CASES: constant(bytes32) = keccak256("derelayl/cases")

struct Params:
    k: uint256
    select_num: uint256
    select_den: uint256
    cap_num: uint256
    cap_den: uint256
    cap: uint256                 # 0: none (cap_num/cap_den of participants)
    test_cases: uint256
    testers: uint256
    mo_budget: uint256
    reward_per_deposit: uint256
    reward_per_commitment: uint256
    reward_per_test_case: uint256
    reward_per_tested_model: uint256
    reward_per_settled_model: uint256
    reward_per_model_case: uint256
    lineage_reward: uint256
    scheme: uint256              # 0 lineage, 1 decay, 2 capped
    supply_cap: uint256
    payee_is_trainer: bool       # lineage_payee: false = model_owner (reference)
    phase_timeout: uint256       # 0: none
    min_improvement: uint256     # 0: off (the improvement rule's margin)
    pooled_cases: bool           # testers score on the pool; one off the median is not paid
    min_trainer_bid: uint256     # the least deposit a trainer may bid (0: none)
    appeal_testers: uint256      # appellants drawn when pooled reports disagree (0: no appeals)
    case_commitments: bool       # testers commit to their cases' digest in the deposit block
    tester_stake: uint256        # testers drawn from miners holding it; frozen and staked in a dispute (0: none)
    challenge_bond: uint256      # every test block holds its rewards; anyone holding it may challenge (0: none)
    challenge_window: uint256    # blocks after the test block an unchallenged round waits to settle
    multipliers: DynArray[uint256, MAX_MULTIPLIERS]

struct Bid:
    participant: uint256
    amount: uint256
    v: uint8
    r: bytes32
    s: bytes32

struct JoinItem:
    key: address
    v: uint8
    r: bytes32
    s: bytes32

struct Commitment:
    participant: uint256
    digest: bytes32
    v: uint8
    r: bytes32
    s: bytes32

struct CoTester:
    tester: uint256
    digest: bytes32
    v: uint8
    r: bytes32
    s: bytes32

# ---------------------------------------------------------------- ERC-20 events

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

# ---------------------------------------------------------------- history (replayed by the Python core)

event Genesis:
    params_json: String[4096]
    seed: bytes32
    genesis_model: bytes32
    participants: DynArray[address, MAX_PARTICIPANTS]

event Registered:
    participant: uint256
    key: indexed(address)
    direct: bool

event Block:
    round: indexed(uint256)
    kind: uint256              # 0 deposit, 1 commit, 2 test, 3 settle (after its items' logs)
    miner: uint256
    time: uint256
    randomness: bytes32
    mixed: bool

event BidLogged:
    round: indexed(uint256)
    role: uint256              # 0 trainer, 1 model owner
    participant: uint256
    amount: uint256
    v: uint8
    r: bytes32
    s: bytes32

event JoinLogged:
    key: indexed(address)
    v: uint8
    r: bytes32
    s: bytes32

event CommitLogged:
    round: indexed(uint256)
    participant: uint256
    digest: bytes32
    v: uint8
    r: bytes32
    s: bytes32

event CommitPosted:
    round: indexed(uint256)
    participant: uint256
    digest: bytes32
    v: uint8
    r: bytes32
    s: bytes32

event FheKey:
    round: indexed(uint256)
    key: Bytes[MAX_FHE_KEY]

event ScoresLogged:
    round: indexed(uint256)
    tester: uint256
    n_test_cases: uint256
    digest: bytes32
    scores: DynArray[int64, MAX_ITEMS]
    v: uint8
    r: bytes32
    s: bytes32

event CasesLogged:
    round: indexed(uint256)
    tester: uint256
    digest: bytes32
    v: uint8
    r: bytes32
    s: bytes32

event Challenged:
    round: indexed(uint256)
    challenger: uint256
    time: uint256
    randomness: bytes32
    mixed: bool

event Selected:
    round: indexed(uint256)
    models: DynArray[uint256, MAX_ITEMS]

event Checkpoint:
    round: uint256
    phase: uint256
    minted: uint256
    burned: uint256
    escrow: uint256
    beacon: bytes32

# ---------------------------------------------------------------- storage

allowance: public(HashMap[address, HashMap[address, uint256]])

params: Params
mix_randomness: public(bool)
domain: public(bytes32)
genesis_model: public(bytes32)  # SHA-256 of the genesis model's bytes (zero: an abstract model)

n_participants: uint256
key_of: HashMap[uint256, address]
index_plus_one: HashMap[address, uint256]
stored: HashMap[uint256, uint256]          # realised balance
trunk_count: HashMap[uint256, uint256]     # trunk models paying this participant
trunk_snap: HashMap[uint256, uint256]      # trunk_acc when last realised
trunk_acc: uint256                 # units paid per trunk model so far
trunk_total: uint256                       # sum of trunk_count

round: uint256
phase: uint256
phase_start: uint256
beacon: bytes32
minted: uint256
burned: uint256
escrow: uint256
latest_version: uint256
next_model_id: uint256

trainer_bits: uint256[WORDS]
n_drawn: uint256                           # participants at this round's role draw (later ones have no role)
block_miners: uint256[4]
co_testers: DynArray[uint256, MAX_TESTERS]

# a round with held test rewards (a disagreement with appeals; every round with challenges), from its
# test block to its settle block: each reporting tester as tester | held reward << 64 | staked << 128
# (tester_stake), the keccak of each one's report, of the test block's medians, the appellants drawn
# after the test block or at the challenge, whether the appeal is open, the challenger + 1 (0: none)
# and its bond (= derelayl.protocol.state.Dispute)
disputed: bool
dispute_testers: DynArray[uint256, MAX_TESTERS]
dispute_rows: DynArray[bytes32, MAX_TESTERS]
dispute_medians: bytes32
appellants: DynArray[uint256, MAX_TESTERS]
dispute_open: bool
challenger: uint256
bond: uint256

# live models, rank order: model_id | owner << 64 | version << 96 | (score + 2**63) << 160
live: DynArray[uint256, MAX_ITEMS]
owner_pos: HashMap[uint256, uint256]       # (round + 1) << 32 | live position, for this round's owners
# pairs: live_pos | mo << 32 | trainer << 64 | mo_deposit << 96 | trainer_deposit << 160
pairs: DynArray[uint256, MAX_ITEMS]
pair_of: HashMap[uint256, uint256]         # (round + 1) << 32 | pair position, for matched trainers
# commitments: trainer | pair_pos << 32 | (score + 2**63) << 64
commits: DynArray[uint256, MAX_ITEMS]
digests: DynArray[bytes32, MAX_ITEMS]
# commitments posted straight to the contract this commit phase: participant / digest -> round + 1
posted: HashMap[uint256, bytes32]
posted_round: HashMap[uint256, uint256]
posted_digest_round: HashMap[bytes32, uint256]
n_posted: uint256
# case commitments (Params.case_commitments), from the deposit block: tester -> digest / round + 1
case_digest: HashMap[uint256, bytes32]
case_round: HashMap[uint256, uint256]

# lineage: level -> position -> payee | parent_pos << 32 ; levels below trunk_top are folded
level_size: HashMap[uint256, uint256]
level_node: HashMap[uint256, HashMap[uint256, uint256]]
n_levels: uint256
trunk_top: uint256


# ================================================================ shared internals


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    # Verify both ends are registered participants (the coin's supply lives in the protocol state)
    s: uint256 = self.index_plus_one[sender]
    r: uint256 = self.index_plus_one[receiver]
    assert s != 0, "UnknownParticipantError: 7"
    assert r != 0, "UnknownParticipantError: 8"
    assert amount <= convert(max_value(int64), uint256), "MalformedError: 9"
    # Verify the sender is not a tester of the round (with tester_stake: its stake is frozen)
    if self.params.tester_stake != 0:
        assert s - 1 != self.block_miners[2] and s - 1 not in self.co_testers, "BalanceError: 56"
    self._debit(s - 1, amount, "BalanceError: 10")
    self.stored[r - 1] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@internal
def _register(key: address, direct: bool):
    assert key != empty(address), "MalformedError: 11"
    assert self.index_plus_one[key] == 0, "DuplicateError: 12"
    i: uint256 = self.n_participants
    assert i < MAX_PARTICIPANTS, "MalformedError: 13"
    self.key_of[i] = key
    self.index_plus_one[key] = i + 1
    self.n_participants = i + 1
    log Registered(participant=i, key=key, direct=direct)


@internal
def _check_commitment(round: uint256, c: Commitment) -> uint256:
    """The pair position of a commitment's trainer, if it is matched this round and signed it."""
    assert c.participant < self.n_participants, "UnknownParticipantError: 22"
    stamp: uint256 = self.pair_of[c.participant]
    assert stamp & ~M32 == (round + 1) << 32, "RoleError: 23"
    message: bytes32 = keccak256(abi_encode(self.domain, TAG_COMMIT, round, c.digest))
    assert self._signer(message, c.v, c.r, c.s) == self.key_of[c.participant], "SignatureError: 24"
    return stamp & M32


@internal
def _verify_header(round: uint256, phase: uint256) -> uint256:
    """The miner's participant index, if it may produce this phase's block now."""
    # Verify the block belongs to the current round and phase
    assert round == self.round, "PhaseError: 34"
    assert phase == self.phase, "PhaseError: 35"
    # Verify the block comes from the miner drawn for it, or from any participant once the phase has timed out
    expected: uint256 = self.block_miners[phase]
    i: uint256 = self.index_plus_one[msg.sender]
    if i != 0 and i - 1 == expected:
        return expected
    assert self._timed_out(), "WrongMinerError: 36"
    assert i != 0, "UnknownParticipantError: 37"
    return i - 1


@view
@internal
def _check_order(given: DynArray[CoTester, MAX_TESTERS], expected: DynArray[uint256, MAX_TESTERS], reason: String[16]):
    """``given`` names ``expected`` in order; once the phase has timed out, some may be missing."""
    timed: bool = self._timed_out()
    assert timed or len(given) == len(expected), reason
    at: uint256 = 0
    for i: uint256 in range(len(given), bound=MAX_TESTERS):
        found: bool = False
        for _: uint256 in range(MAX_TESTERS):
            if at >= len(expected):
                break
            if expected[at] == given[i].tester:
                found = True
                at += 1
                break
            assert timed, reason
            at += 1
        assert found, reason


@view
@internal
def _timed_out() -> bool:
    timeout: uint256 = self.params.phase_timeout
    return timeout != 0 and block.number >= self.phase_start + timeout


@internal
def _check_bid(b: Bid, seen: uint256[WORDS], per: uint256, owner: bool, round: uint256) -> uint256[WORDS]:
    # Verify the bidder is registered, holds the role this round, and bids once
    assert b.participant < self.n_participants, "UnknownParticipantError: 38"
    role: uint256 = 0
    if owner:
        assert self.owner_pos[b.participant] >> 32 == round + 1, "RoleError: 39"
        role = 1
    else:
        assert self._is_trainer(b.participant), "RoleError: 40"
    word: uint256 = b.participant // 256
    bit: uint256 = 1 << (b.participant % 256)
    assert seen[word] & bit == 0, "DuplicateError: 41"
    out: uint256[WORDS] = seen
    out[word] = seen[word] | bit
    # Verify the amount is covered by the bidder's balance (per times for model owners)
    assert b.amount <= self._balance(b.participant) // per, "BalanceError: 42"
    assert owner or b.amount >= self.params.min_trainer_bid, "BalanceError: 43"
    message: bytes32 = keccak256(abi_encode(self.domain, TAG_BID, round, role, b.amount))
    assert self._signer(message, b.v, b.r, b.s) == self.key_of[b.participant], "SignatureError: 44"
    return out


@view
@internal
def _signer(message: bytes32, v: uint8, r: bytes32, s: bytes32) -> address:
    digest: bytes32 = keccak256(concat(b"\x19Ethereum Signed Message:\n32", message))
    return ecrecover(digest, convert(v, uint256), convert(r, uint256), convert(s, uint256))


@view
@internal
def _is_trainer(p: uint256) -> bool:
    return self.trainer_bits[p // 256] & (1 << (p % 256)) != 0


@view
@internal
def _balance(p: uint256) -> uint256:
    return self.stored[p] + self.trunk_count[p] * (self.trunk_acc - self.trunk_snap[p])


@internal
def _realise(p: uint256):
    """Move trunk rewards accrued so far into the stored balance."""
    count: uint256 = self.trunk_count[p]
    acc: uint256 = self.trunk_acc
    if count != 0:
        accrued: uint256 = count * (acc - self.trunk_snap[p])
        if accrued != 0:
            self.stored[p] += accrued
            log Transfer(sender=empty(address), receiver=self.key_of[p], value=accrued)
    self.trunk_snap[p] = acc


@internal
def _debit(p: uint256, amount: uint256, reason: String[64]):
    self._realise(p)
    have: uint256 = self.stored[p]
    assert have >= amount, reason
    self.stored[p] = have - amount


@view
@internal
def _mint_room(amount: uint256) -> uint256:
    if self.params.scheme == 2:
        supply: uint256 = self.minted - self.burned
        if supply >= self.params.supply_cap:
            return 0
        return min(amount, self.params.supply_cap - supply)
    return amount


@internal
def _pay_miner(miner: uint256, amount: uint256):
    paid: uint256 = self._mint_room(amount)
    self.stored[miner] += paid
    self.minted += paid
    if paid != 0:
        log Transfer(sender=empty(address), receiver=self.key_of[miner], value=paid)


@internal
def _mix() -> bytes32:
    """Mix this block's randomness (the EVM's prevrandao) into the beacon; returns it."""
    if not self.mix_randomness:
        self.beacon = sha256(self.beacon)
        return empty(bytes32)
    r: bytes32 = block.prevrandao
    self.beacon = sha256(concat(self.beacon, r))
    return r


@internal
def _end_block(round: uint256, kind: uint256, miner: uint256):
    """Mix the block's randomness, log the block (its items are logged before it), next phase."""
    randomness: bytes32 = self._mix()
    log Block(round=round, kind=kind, miner=miner, time=block.number, randomness=randomness, mixed=self.mix_randomness)
    self._end_phase(kind + 1)


@internal
def _end_phase(phase: uint256):
    self.phase = phase
    self.phase_start = block.number
    log Checkpoint(round=self.round, phase=phase, minted=self.minted, burned=self.burned, escrow=self.escrow, beacon=self.beacon)


@view
@internal
def _word(purpose: bytes8, index: uint256) -> uint256:
    return convert(sha256(concat(self.beacon, purpose, convert(index, bytes32))), uint256)


@view
@internal
def _key(purpose: bytes8, item: uint256) -> uint256:
    """ticket << 32 | item: ticket = 32-bit chunk item % 8 of word(purpose, item // 8)."""
    h: uint256 = self._word(purpose, item // 8)
    return (((h >> (32 * (7 - item % 8))) & M32) << 32) | item


@internal
def _draw_roles():
    """= derelayl.protocol.roles.assign_roles: trainers are the m non-owners with the lowest
    role keys (a bounded max-heap, O(n log m)); miners the rest; block miners drawn from the
    miners, the testing miner and co-testers from the eligible ones (with tester_stake: the
    miners whose balance is at least the stake, unless fewer than ``testers`` have it)."""
    n: uint256 = self.n_participants
    self.n_drawn = n
    owner_mask: uint256[WORDS] = empty(uint256[WORDS])
    tag: uint256 = (self.round + 1) << 32
    n_owners: uint256 = len(self.live)
    for pos: uint256 in range(n_owners, bound=MAX_ITEMS):
        o: uint256 = (self.live[pos] >> 64) & M32
        owner_mask[o // 256] |= 1 << (o % 256)
        self.owner_pos[o] = tag | pos
    cap: uint256 = 0
    if self.params.cap != 0:
        cap = self.params.cap
    else:
        cap = self.params.cap_num * n // self.params.cap_den
    cap = min(cap, n - 1)
    others: uint256 = n - n_owners
    m: uint256 = 0
    if cap > n_owners and others > 1:
        m = min(cap - n_owners, others - 1)

    # the m smallest role keys among non-owners (max-heap of size m)
    heap: DynArray[uint256, MAX_PARTICIPANTS] = []
    h: uint256 = 0
    if m > 0:
        for p: uint256 in range(n, bound=MAX_PARTICIPANTS):
            if p % 8 == 0:
                h = self._word(ROLES, p // 8)
            if owner_mask[p // 256] & (1 << (p % 256)) != 0:
                continue
            key: uint256 = (((h >> (32 * (7 - p % 8))) & M32) << 32) | p
            if len(heap) < m:
                heap.append(key)
                c: uint256 = len(heap) - 1
                for _: uint256 in range(11):
                    if c == 0:
                        break
                    parent: uint256 = (c - 1) // 2
                    if heap[parent] >= heap[c]:
                        break
                    tmp: uint256 = heap[parent]
                    heap[parent] = heap[c]
                    heap[c] = tmp
                    c = parent
            elif key < heap[0]:
                heap[0] = key
                c: uint256 = 0
                for _: uint256 in range(11):
                    left: uint256 = 2 * c + 1
                    if left >= m:
                        break
                    big: uint256 = left
                    if left + 1 < m and heap[left + 1] > heap[left]:
                        big = left + 1
                    if heap[c] >= heap[big]:
                        break
                    tmp: uint256 = heap[big]
                    heap[big] = heap[c]
                    heap[c] = tmp
                    c = big
    bits: uint256[WORDS] = empty(uint256[WORDS])
    for key: uint256 in heap:
        t: uint256 = key & M32
        bits[t // 256] |= 1 << (t % 256)
    self.trainer_bits = bits

    miners: DynArray[uint256, MAX_PARTICIPANTS] = []
    for p: uint256 in range(n, bound=MAX_PARTICIPANTS):
        if (owner_mask[p // 256] | bits[p // 256]) & (1 << (p % 256)) == 0:
            miners.append(p)
    count: uint256 = len(miners)
    # the eligible testers, in index order: with tester_stake, the miners holding it (balances
    # as the core sees them: stored + accrued trunk rewards), unless too few do
    stake: uint256 = self.params.tester_stake
    pool: DynArray[uint256, MAX_PARTICIPANTS] = []
    if stake != 0:
        for p: uint256 in miners:
            if self._balance(p) >= stake:
                pool.append(p)
    if len(pool) < self.params.testers:
        pool = miners
    chosen: uint256[4] = empty(uint256[4])
    tested: uint256 = 0
    for j: uint256 in range(4):
        pick: uint256 = self._word(MINERS, j)
        if j == 2:
            tested = pick % len(pool)
            chosen[j] = pool[tested]
        else:
            chosen[j] = miners[pick % count]
    self.block_miners = chosen

    # co-testers: partial Fisher-Yates over the eligible miners without the testing miner
    if self.params.testers > 1:
        for i: uint256 in range(tested, len(pool) - 1, bound=MAX_PARTICIPANTS):
            pool[i] = pool[i + 1]
        pool.pop()
    extra: uint256 = min(self.params.testers - 1, len(pool))
    co: DynArray[uint256, MAX_TESTERS] = []
    for j: uint256 in range(extra, bound=MAX_TESTERS):
        draw: uint256 = self._word(TESTERS, j)
        i: uint256 = j + draw % (len(pool) - j)
        tmp: uint256 = pool[j]
        pool[j] = pool[i]
        pool[i] = tmp
        co.append(pool[j])
    self.co_testers = co


@internal
def _rank(n: uint256, take: uint256) -> DynArray[uint256, MAX_ITEMS]:
    """The first ``take`` commitments by score (highest first), equal scores by settle key,
    leaving out those the improvement rule flagged: heapsort over flag << 192 | (2**64 - 1 -
    biased score) << 64 | key, smallest first (flagged ones sort last)."""
    values: DynArray[uint256, MAX_ITEMS] = []
    h: uint256 = 0
    for i: uint256 in range(n, bound=MAX_ITEMS):
        if i % 8 == 0:
            h = self._word(SETTLE_KEY, i // 8)
        key: uint256 = (((h >> (32 * (7 - i % 8))) & M32) << 32) | i
        biased: uint256 = (self.commits[i] >> 64) & M64
        values.append((((self.commits[i] >> 128) & 1) << 192) | ((M64 - biased) << 64) | key)
    # build a max-heap (sift down from the last parent), then move the maximum to the end
    # repeatedly: values end in ascending order
    for step: uint256 in range(2 * n, bound=2 * MAX_ITEMS):
        size: uint256 = n
        c: uint256 = 0
        if step < n // 2:
            c = n // 2 - 1 - step
        elif step < n // 2 + n - 1:
            size = n - 1 - (step - n // 2)
            tmp: uint256 = values[0]
            values[0] = values[size]
            values[size] = tmp
        else:
            break
        for _: uint256 in range(11):
            left: uint256 = 2 * c + 1
            if left >= size:
                break
            big: uint256 = left
            if left + 1 < size and values[left + 1] > values[left]:
                big = left + 1
            if values[c] >= values[big]:
                break
            tmp: uint256 = values[big]
            values[big] = values[c]
            values[c] = tmp
            c = big
    out: DynArray[uint256, MAX_ITEMS] = []
    for i: uint256 in range(take, bound=MAX_ITEMS):
        if values[i] >> 192 == 0:
            out.append(values[i] & M32)
    return out


@internal
def _pay_lineages(selected: DynArray[uint256, MAX_ITEMS]):
    """= derelayl.protocol.lineage.LineageTree.settle (+ the capped rate): append the selected
    models as a new level, pay every ancestor below the trunk by walking the kept levels
    upward with descendant counts, pay the trunk through the accumulator, fold coalesced top
    levels into the trunk."""
    s: uint256 = len(selected)
    new_level: uint256 = self.n_levels
    top: uint256 = self.trunk_top
    mults: DynArray[uint256, MAX_MULTIPLIERS] = self.params.multipliers
    horizon: uint256 = len(mults) - 1
    beyond: uint256 = mults[horizon]

    # the new level: payee and parent position of each selected model, in rank order
    for i: uint256 in range(s, bound=MAX_ITEMS):
        pair: uint256 = self.pairs[(self.commits[selected[i]] >> 32) & M32]
        payee: uint256 = (pair >> 32) & M32
        if self.params.payee_is_trainer:
            payee = (pair >> 64) & M32
        self.level_node[new_level][i] = payee | ((pair & M32) << 32)
    self.level_size[new_level] = s
    self.n_levels = new_level + 1

    # reward per (ancestor, descendant) count: the capped scheme lowers it to fit the room
    kept: uint256 = new_level + 1 - top
    rate: uint256 = mults[0]
    if self.params.scheme != 1:
        counts: uint256 = s * (kept + self.trunk_total)
        room: uint256 = self._mint_room(rate * counts)
        if room < rate * counts:
            rate = room // counts

    # walk the kept levels upward: weights[i] = selected models descending from node i
    weights: DynArray[uint256, MAX_ITEMS] = []
    for i: uint256 in range(s, bound=MAX_ITEMS):
        weights.append(1)
    total: uint256 = 0
    single: DynArray[uint256, MAX_KEPT] = []   # per level from the new one up: the payee if one node lives, else max
    for d: uint256 in range(kept, bound=MAX_KEPT):
        level: uint256 = new_level - d
        mult: uint256 = rate
        if self.params.scheme == 1:
            mult = mults[min(d, horizon)]
        width: uint256 = self.level_size[level]
        up: DynArray[uint256, MAX_ITEMS] = []
        if level > top:
            for i: uint256 in range(self.level_size[level - 1], bound=MAX_ITEMS):
                up.append(0)
        alive: uint256 = 0
        last_payee: uint256 = 0
        for i: uint256 in range(width, bound=MAX_ITEMS):
            w: uint256 = weights[i]
            if w == 0:
                continue
            node: uint256 = self.level_node[level][i]
            payee: uint256 = node & M32
            alive += 1
            last_payee = payee
            if mult != 0:
                self.stored[payee] += w * mult
                total += w * mult
                log Transfer(sender=empty(address), receiver=self.key_of[payee], value=w * mult)
            if level > top:
                parent: uint256 = (node >> 32) & M32
                up[parent] += w
        if alive == 1:
            single.append(last_payee)
        else:
            single.append(max_value(uint256))
        weights = up

    # the trunk: every trunk model earns s * rate this round, paid lazily
    if self.params.scheme != 1 and rate != 0:
        self.trunk_acc += s * rate
        total += s * rate * self.trunk_total
    self.minted += total

    # fold: coalesced top levels join the trunk (constant schemes), or leave (decay beyond horizon)
    for _: uint256 in range(kept, bound=MAX_KEPT):
        if new_level + 1 - top <= 1 or new_level - top < horizon:
            break
        if beyond == 0:
            top += 1
            continue
        payee: uint256 = single[new_level - top]
        if payee == max_value(uint256):
            break
        self._realise(payee)
        self.trunk_count[payee] += 1
        self.trunk_total += 1
        top += 1
    self.trunk_top = top
