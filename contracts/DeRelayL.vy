# pragma version 0.4.3
# pragma evm-version cancun
"""
@title DeRelayL: the protocol's rules as an EVM contract (the entry point)
@notice The same rule set as the Python core (src/derelayl/protocol/transition.py), check for
        check; tests/test_contract_differential.py runs random action sequences through both and
        compares balances, escrow, roles, owners, selected models, versions and rejections.
        The coin is an ERC-20 (6 decimals = the core's integer units). Each revert reason is the
        name of the core's exception class and a number (RoleError: 23); the numbers are spelled
        out in src/derelayl/evm/reasons.py, which the client applies.
@dev    Two contracts over one storage (EIP-170 caps each at 24,576 bytes): this one holds the
        genesis, the coin, registration, the deposit and commit blocks and the views; every other
        call (post, test, settle: contracts/TestAndSettle.vy) is run by ``__default__`` in this
        contract's storage through DELEGATECALL to EXTENSION, fixed at deployment. Both
        ``initializes: rules`` (contracts/rules.vy: types, events, storage, shared checks) and
        declare no storage of their own, so their storage layouts are the same.
"""

import rules

initializes: rules

exports: (rules.allowance, rules.mix_randomness, rules.domain, rules.genesis_model)

name: public(constant(String[16])) = "DeRelayL coin"
symbol: public(constant(String[8])) = "DRL"
decimals: public(constant(uint8)) = 6

# the TestAndSettle code this contract runs for the calls it does not define itself
EXTENSION: public(immutable(address))


@deploy
def __init__(extension: address, p: rules.Params, seed: bytes32, keys: DynArray[address, rules.MAX_PARTICIPANTS], mix_randomness: bool, params_json: String[4096], genesis_model: bytes32):
    assert len(keys) >= 2, "ConfigError: 1"
    EXTENSION = extension
    assert p.k >= 1 and p.test_cases >= 1 and p.testers >= 1 and p.testers <= rules.MAX_TESTERS, "ConfigError: 2"
    assert p.select_den > 0 and p.select_num > 0 and p.select_num <= p.select_den, "ConfigError: 3"
    assert p.cap_den > 0 and p.cap_num > 0 and p.cap_num < p.cap_den, "ConfigError: 4"
    assert p.scheme <= 2 and len(p.multipliers) >= 1, "ConfigError: 5"
    assert p.appeal_testers <= rules.MAX_TESTERS and (p.appeal_testers == 0 or p.pooled_cases), "ConfigError: 49"
    assert p.tester_stake == 0 or p.appeal_testers > 0, "ConfigError: 55"
    assert p.challenge_bond == 0 or p.appeal_testers > 0, "ConfigError: 57"
    assert p.challenge_window <= 1000000, "ConfigError: 58"
    assert (p.challenge_bond == 0) == (p.challenge_window == 0), "ConfigError: 59"
    rules.params = p
    rules.mix_randomness = mix_randomness
    rules.domain = keccak256(abi_encode(keccak256("derelayl/2"), chain.id, self))
    rules.beacon = seed
    for key: address in keys:
        rules._register(key, False)
    rules.next_model_id = 1
    # the genesis model (version 0, score 0), held by participant 0; lineage level 0
    rules.live.append(convert(rules.BIAS, uint256) << 160)
    rules.level_size[0] = 1
    rules.level_node[0][0] = 0
    rules.n_levels = 1
    rules._draw_roles()
    rules.genesis_model = genesis_model
    log rules.Genesis(params_json=params_json, seed=seed, genesis_model=genesis_model, participants=keys)


@view
@external
def totalSupply() -> uint256:
    return rules.minted - rules.burned


@view
@external
def balanceOf(owner: address) -> uint256:
    if owner == self:
        return rules.escrow
    i: uint256 = rules.index_plus_one[owner]
    if i == 0:
        return 0
    return rules._balance(i - 1)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    rules._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = rules.allowance[sender][msg.sender]
    assert allowed >= amount, "BalanceError: 6"
    rules._transfer(sender, receiver, amount)
    if allowed != max_value(uint256):
        rules.allowance[sender][msg.sender] = allowed - amount
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    rules.allowance[msg.sender][spender] = amount
    log rules.Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def register():
    """Permissionless: any address joins; it takes part from the next role draw."""
    rules._register(msg.sender, True)


@external
def deposit(round: uint256, trainer_bids: DynArray[rules.Bid, rules.MAX_ITEMS], mo_bids: DynArray[rules.Bid, rules.MAX_ITEMS], joins: DynArray[rules.JoinItem, rules.MAX_JOINS], case_commitments: DynArray[rules.CoTester, rules.MAX_TESTERS]):
    """Bids in (in canonical order), testers' case commitments (with case_commitments), auction
    run, deposits escrowed, newcomers registered."""
    miner: uint256 = rules._verify_header(round, rules.DEPOSIT)
    k: uint256 = rules.params.k
    seen: uint256[rules.WORDS] = empty(uint256[rules.WORDS])
    prev_amount: uint256 = 0
    prev_key: uint256 = 0
    for i: uint256 in range(len(trainer_bids), bound=rules.MAX_ITEMS):
        b: rules.Bid = trainer_bids[i]
        seen = rules._check_bid(b, seen, 1, False, round)
        log rules.BidLogged(round=round, role=0, participant=b.participant, amount=b.amount, v=b.v, r=b.r, s=b.s)
        # Verify trainer bids are listed highest first, equal bids in the round's auction-key order
        key: uint256 = rules._key(rules.AUCTION, b.participant)
        if i > 0:
            assert prev_amount > b.amount or (prev_amount == b.amount and prev_key < key), "MalformedError: 14"
        prev_amount = b.amount
        prev_key = key
    seen = empty(uint256[rules.WORDS])
    prev_pos: uint256 = 0
    for i: uint256 in range(len(mo_bids), bound=rules.MAX_ITEMS):
        b: rules.Bid = mo_bids[i]
        seen = rules._check_bid(b, seen, k, True, round)
        log rules.BidLogged(round=round, role=1, participant=b.participant, amount=b.amount, v=b.v, r=b.r, s=b.s)
        # Verify model-owner bids are listed in the order of the live models their bidders hold
        pos: uint256 = rules.owner_pos[b.participant] & rules.M32
        if i > 0:
            assert prev_pos < pos, "MalformedError: 15"
        prev_pos = pos
    # Verify case commitments only where the rules take them: one from each of the round's
    # testers, in role order (once the phase has timed out, a silent tester's may be missing),
    # each signed by its tester; a tester's report must then name its digest
    if not rules.params.case_commitments:
        assert len(case_commitments) == 0, "MalformedError: 50"
    else:
        testers: DynArray[uint256, rules.MAX_TESTERS] = [rules.block_miners[rules.TEST]]
        for t: uint256 in rules.co_testers:
            testers.append(t)
        rules._check_order(case_commitments, testers, "RoleError: 51")
        for c: rules.CoTester in case_commitments:
            message: bytes32 = keccak256(abi_encode(rules.domain, rules.TAG_CASES, round, c.digest))
            assert rules._signer(message, c.v, c.r, c.s) == rules.key_of[c.tester], "SignatureError: 52"
            rules.case_digest[c.tester] = c.digest
            rules.case_round[c.tester] = round + 1
            log rules.CasesLogged(round=round, tester=c.tester, digest=c.digest, v=c.v, r=c.r, s=c.s)

    # Apply: match (trainer bid i -> owner bid i // k), escrow, pay the miner, register.
    n_pairs: uint256 = min(len(trainer_bids), k * len(mo_bids))
    rules.pairs = []
    tag: uint256 = (round + 1) << 32
    total: uint256 = 0
    for i: uint256 in range(n_pairs, bound=rules.MAX_ITEMS):
        t: rules.Bid = trainer_bids[i]
        m: rules.Bid = mo_bids[i // k]
        pos: uint256 = rules.owner_pos[m.participant] & rules.M32
        rules._debit(t.participant, t.amount, "BalanceError: 16")
        rules._debit(m.participant, m.amount, "BalanceError: 17")
        rules.pairs.append(pos | (m.participant << 32) | (t.participant << 64) | (m.amount << 96) | (t.amount << 160))
        rules.pair_of[t.participant] = tag | i
        total += t.amount + m.amount
        log rules.Transfer(sender=rules.key_of[t.participant], receiver=self, value=t.amount)
        log rules.Transfer(sender=rules.key_of[m.participant], receiver=self, value=m.amount)
    rules.escrow += total
    rules._pay_miner(miner, rules.params.reward_per_deposit * n_pairs)
    for j: rules.JoinItem in joins:
        message: bytes32 = keccak256(abi_encode(rules.domain, rules.TAG_JOIN, j.key))
        assert rules._signer(message, j.v, j.r, j.s) == j.key, "SignatureError: 18"
        rules._register(j.key, False)
        log rules.JoinLogged(key=j.key, v=j.v, r=j.r, s=j.s)
    rules._end_block(round, rules.DEPOSIT, miner)


@external
def commit(round: uint256, commitments: DynArray[rules.Commitment, rules.MAX_ITEMS], fhe_public_key: Bytes[rules.MAX_FHE_KEY]):
    """Matched trainers commit to their new models, in pair order, before any test case is known."""
    miner: uint256 = rules._verify_header(round, rules.COMMIT)
    n: uint256 = len(commitments)
    prev_pair: uint256 = 0
    carried: uint256 = 0
    for i: uint256 in range(n, bound=rules.MAX_ITEMS):
        c: rules.Commitment = commitments[i]
        # Verify each committer is a trainer matched this round, and signed its commitment
        pair: uint256 = rules._check_commitment(round, c)
        # Verify pair order (so no trainer commits twice) and no repeated digest
        if i > 0:
            assert prev_pair != pair, "DuplicateError: 25"
            assert prev_pair < pair, "MalformedError: 26"
        prev_pair = pair
        for j: uint256 in range(i, bound=rules.MAX_ITEMS):
            assert commitments[j].digest != c.digest, "DuplicateError: 27"
        if rules.posted_round[c.participant] == round + 1:
            assert rules.posted[c.participant] == c.digest, "MalformedError: 28"
            carried += 1
        log rules.CommitLogged(round=round, participant=c.participant, digest=c.digest, v=c.v, r=c.r, s=c.s)
    # Verify the block carries every commitment posted straight to the contract
    assert carried == rules.n_posted, "MalformedError: 28"
    rules.n_posted = 0

    rules.commits = []
    rules.digests = []
    for c: rules.Commitment in commitments:
        rules.commits.append(c.participant | ((rules.pair_of[c.participant] & rules.M32) << 32))
        rules.digests.append(c.digest)
    rules.next_model_id += n
    if n > 0:
        rules.latest_version = max(rules.latest_version, round + 1)
    rules._pay_miner(miner, rules.params.reward_per_commitment * n)
    log rules.FheKey(round=round, key=fhe_public_key)
    rules._end_block(round, rules.COMMIT, miner)


struct Head:
    round: uint256
    phase: uint256
    phase_start: uint256
    beacon: bytes32
    minted: uint256
    burned: uint256
    escrow: uint256
    latest_version: uint256
    next_model_id: uint256
    n_participants: uint256
    trunk_acc: uint256
    n_levels: uint256
    trunk_top: uint256


@view
@external
def head() -> Head:
    """The round's scalars in one call."""
    return Head(
        round=rules.round,
        phase=rules.phase,
        phase_start=rules.phase_start,
        beacon=rules.beacon,
        minted=rules.minted,
        burned=rules.burned,
        escrow=rules.escrow,
        latest_version=rules.latest_version,
        next_model_id=rules.next_model_id,
        n_participants=rules.n_participants,
        trunk_acc=rules.trunk_acc,
        n_levels=rules.n_levels,
        trunk_top=rules.trunk_top,
    )


@view
@external
def params_of() -> rules.Params:
    return rules.params


@view
@external
def participant_keys(start: uint256, count: uint256) -> DynArray[address, rules.MAX_PARTICIPANTS]:
    out: DynArray[address, rules.MAX_PARTICIPANTS] = []
    for i: uint256 in range(start, start + count, bound=rules.MAX_PARTICIPANTS):
        if i >= rules.n_participants:
            break
        out.append(rules.key_of[i])
    return out


@view
@external
def roles() -> (uint256[rules.WORDS], uint256[4], DynArray[uint256, rules.MAX_TESTERS]):
    return rules.trainer_bits, rules.block_miners, rules.co_testers


@view
@external
def dispute() -> (bool, DynArray[uint256, rules.MAX_TESTERS], DynArray[uint256, rules.MAX_TESTERS], bool, uint256, uint256):
    """A round with held test rewards, until its settle block: tester | held << 64 | staked << 128
    each, the appellants, whether the appeal is open, the challenger + 1 (0: none) and its bond."""
    return rules.disputed, rules.dispute_testers, rules.appellants, rules.dispute_open, rules.challenger, rules.bond


@view
@external
def live_models() -> DynArray[uint256, rules.MAX_ITEMS]:
    return rules.live


@view
@external
def round_items() -> (DynArray[uint256, rules.MAX_ITEMS], DynArray[uint256, rules.MAX_ITEMS], DynArray[bytes32, rules.MAX_ITEMS]):
    return rules.pairs, rules.commits, rules.digests


@view
@external
def balances(start: uint256, count: uint256) -> DynArray[uint256, rules.MAX_PARTICIPANTS]:
    out: DynArray[uint256, rules.MAX_PARTICIPANTS] = []
    for i: uint256 in range(start, start + count, bound=rules.MAX_PARTICIPANTS):
        if i >= rules.n_participants:
            break
        out.append(rules._balance(i))
    return out


@external
def __default__():
    """post, test, settle: run TestAndSettle's code on this contract's storage (its revert
    reasons and logs come back as this contract's)."""
    raw_call(EXTENSION, msg.data, is_delegate_call=True)
