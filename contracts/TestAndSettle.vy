# pragma version 0.4.3
# pragma evm-version cancun
"""
@title DeRelayL: the test and settlement blocks, commitments posted and challenges sent straight to the chain
@notice Never called on its own address: DeRelayL.vy runs this code in its own storage through
        DELEGATECALL (its ``__default__``), so everything here reads and writes DeRelayL's state
        and logs as DeRelayL. Same rule set as the Python core, check for check.
"""

import rules

initializes: rules


@external
def post(round: uint256, c: rules.Commitment):
    """A matched trainer's signed commitment, straight to the contract in the commit phase (anyone
    may send it): the round's commit block must carry it, so no miner can leave it out."""
    assert round == rules.round and rules.phase == rules.COMMIT, "PhaseError: 19"
    rules._check_commitment(round, c)
    assert rules.posted_round[c.participant] != round + 1, "DuplicateError: 20"
    assert rules.posted_digest_round[c.digest] != round + 1, "DuplicateError: 21"
    rules.posted[c.participant] = c.digest
    rules.posted_round[c.participant] = round + 1
    rules.posted_digest_round[c.digest] = round + 1
    rules.n_posted += 1
    log rules.CommitPosted(round=round, participant=c.participant, digest=c.digest, v=c.v, r=c.r, s=c.s)


@external
def test(round: uint256, n_test_cases: uint256, test_cases_digest: bytes32, scores: DynArray[int64, rules.MAX_ITEMS], co_testers: DynArray[rules.CoTester, rules.MAX_TESTERS], co_scores: DynArray[int64, rules.MAX_CO_SCORES]):
    """The round's testers score every committed model (and, with the improvement rule, every
    live model after them); a model's score is the lower median. Co-testers' scores come flat,
    tester after tester (``m`` each). With appeals, a disagreement among pooled reports holds
    every tester's reward (and with tester_stake its stake: its balance, up to the stake) and
    draws the appellants; with challenges, every test block holds them, and only a
    disagreement opens the appeal (= derelayl.protocol.appeals.hold)."""
    miner: uint256 = rules._verify_header(round, rules.TEST)
    n: uint256 = len(rules.commits)
    m: uint256 = self._scored(n)
    # Verify the required number of test cases
    assert n_test_cases == rules.params.test_cases, "MalformedError: 29"
    # Verify one score per commitment (and per live model)
    assert len(scores) == m, "MalformedError: 30"
    # Verify a tester's cases are the ones it committed to before any model could be seen
    self._check_cases(round, miner, test_cases_digest)
    # Verify one report from each co-tester drawn this round, in role order; once the phase has
    # timed out, a silent co-tester's report may be missing (it forfeits its reward)
    rules._check_order(co_testers, rules.co_testers, "RoleError: 31")
    assert len(co_scores) == m * len(co_testers), "MalformedError: 32"
    for c: rules.CoTester in co_testers:
        self._check_cases(round, c.tester, c.digest)
    log rules.ScoresLogged(round=round, tester=miner, n_test_cases=n_test_cases, digest=test_cases_digest, scores=scores, v=0, r=empty(bytes32), s=empty(bytes32))
    rows: DynArray[bytes32, rules.MAX_TESTERS] = [keccak256(abi_encode(scores))]
    co_rows: DynArray[bytes32, rules.MAX_TESTERS] = self._check_reports(round, co_testers, co_scores, m, "SignatureError: 33")
    for h: bytes32 in co_rows:
        rows.append(h)

    medians: DynArray[int64, rules.MAX_ITEMS] = []
    for i: uint256 in range(m, bound=rules.MAX_ITEMS):
        column: DynArray[int64, rules.MAX_TESTERS] = [scores[i]]
        for c: uint256 in range(len(co_testers), bound=rules.MAX_TESTERS):
            column.append(co_scores[c * m + i])
        medians.append(self._median(column))
    self._set_scores(medians, n)
    amount: uint256 = rules.params.reward_per_test_case * rules.params.test_cases + rules.params.reward_per_tested_model * n
    # with pooled cases, honest testers agree: one whose scores are not the medians is not paid
    pooled: bool = rules.params.pooled_cases
    final: bytes32 = keccak256(abi_encode(medians))
    testers: DynArray[uint256, rules.MAX_TESTERS] = [miner]
    agreed: bool = True
    for c: rules.CoTester in co_testers:
        testers.append(c.tester)
    for j: uint256 in range(len(testers), bound=rules.MAX_TESTERS):
        agreed = agreed and rows[j] == final
    disagreed: bool = rules.params.appeal_testers > 0 and pooled and not agreed
    if disagreed or rules.params.challenge_bond != 0:
        # hold every tester's reward and stake in escrow; a disagreement opens the appeal (appellants
        # drawn once mixed)
        stake: uint256 = rules.params.tester_stake
        for j: uint256 in range(len(testers), bound=rules.MAX_TESTERS):
            t: uint256 = testers[j]
            held: uint256 = rules._mint_room(amount)
            rules.minted += held
            staked: uint256 = 0
            if stake != 0:
                staked = min(rules._balance(t), stake)
                rules._debit(t, staked, "BalanceError: 10")
                log rules.Transfer(sender=rules.key_of[t], receiver=self, value=staked)
            rules.escrow += held + staked
            rules.dispute_testers.append(t | (held << 64) | (staked << 128))
        rules.dispute_rows = rows
        rules.dispute_medians = final
        rules.disputed = True
        rules.dispute_open = disagreed
        rules._end_block(round, rules.TEST, miner)
        if disagreed:
            self._draw_appellants(testers)
        return
    for j: uint256 in range(len(testers), bound=rules.MAX_TESTERS):
        if not pooled or rows[j] == final:
            rules._pay_miner(testers[j], amount)
    rules._end_block(round, rules.TEST, miner)


@external
def challenge(round: uint256):
    """= derelayl.protocol.appeals.process_challenge: a registered participant holding the bond
    (msg.sender) challenges the round's test block in its settle phase: the bond into escrow,
    this block's randomness mixed in, appellants drawn from the miners that neither tested nor
    challenged, the appeal open, the phase's clock restarted."""
    bond: uint256 = rules.params.challenge_bond
    # Verify challenges are on and it is this round's settle phase (block.number >= phase_start)
    assert bond != 0, "MalformedError: 60"
    assert round == rules.round and rules.phase == rules.SETTLE, "PhaseError: 61"
    # Verify the challenger is registered, no appeal is open yet, and it holds the bond
    i: uint256 = rules.index_plus_one[msg.sender]
    assert i != 0, "UnknownParticipantError: 62"
    assert not rules.dispute_open, "DuplicateError: 63"
    rules._debit(i - 1, bond, "BalanceError: 64")
    log rules.Transfer(sender=msg.sender, receiver=self, value=bond)
    rules.escrow += bond
    randomness: bytes32 = rules._mix()
    # nobody judges itself: the testers and the challenger are left out of the draw
    excluded: DynArray[uint256, rules.MAX_TESTERS + 1] = [i - 1]
    for d: uint256 in rules.dispute_testers:
        excluded.append(d & rules.M32)
    self._draw_appellants(excluded)
    rules.dispute_open = True
    rules.challenger = i
    rules.bond = bond
    rules.phase_start = block.number
    log rules.Challenged(round=round, challenger=i - 1, time=block.number, randomness=randomness, mixed=rules.mix_randomness)
    log rules.Checkpoint(round=round, phase=rules.SETTLE, minted=rules.minted, burned=rules.burned, escrow=rules.escrow, beacon=rules.beacon)


@external
def settle(round: uint256, appeals: DynArray[rules.CoTester, rules.MAX_TESTERS], appeal_scores: DynArray[int64, rules.MAX_APPEAL_SCORES]):
    """Decide a round's held test rewards and open appeal; rank, select the top fraction, refund
    winners, burn the rest, pay lineages, draw roles. With challenges, an unchallenged round
    settles only once its challenge window has passed."""
    miner: uint256 = rules._verify_header(round, rules.SETTLE)
    # Verify appeal reports only in an open appeal; an unchallenged round waits out the window
    if not rules.dispute_open:
        assert len(appeals) == 0, "MalformedError: 45"
        assert block.number >= rules.phase_start + rules.params.challenge_window, "PhaseError: 65"
    if rules.disputed:
        self._decide(round, appeals, appeal_scores)
    randomness: bytes32 = rules._mix()
    mixed: bool = rules.mix_randomness
    n: uint256 = len(rules.commits)
    selected: DynArray[uint256, rules.MAX_ITEMS] = rules._rank(n, rules.params.select_num * n // rules.params.select_den)

    # Refund the deposits of selected models; burn all others.
    refunded: uint256 = 0
    for c: uint256 in selected:
        pair: uint256 = rules.pairs[(rules.commits[c] >> 32) & rules.M32]
        mo: uint256 = (pair >> 32) & rules.M32
        trainer: uint256 = (pair >> 64) & rules.M32
        mo_deposit: uint256 = (pair >> 96) & rules.M64
        trainer_deposit: uint256 = (pair >> 160) & rules.M64
        rules.stored[trainer] += trainer_deposit
        rules.stored[mo] += mo_deposit
        refunded += trainer_deposit + mo_deposit
        log rules.Transfer(sender=self, receiver=rules.key_of[trainer], value=trainer_deposit)
        log rules.Transfer(sender=self, receiver=rules.key_of[mo], value=mo_deposit)
    burned: uint256 = rules.escrow - refunded
    rules.escrow = 0
    rules.burned += burned
    log rules.Transfer(sender=self, receiver=empty(address), value=burned)
    per_model: uint256 = rules.params.reward_per_settled_model + rules.params.reward_per_model_case * rules.params.test_cases
    rules._pay_miner(miner, per_model * n)

    selected_ids: DynArray[uint256, rules.MAX_ITEMS] = []
    base_id: uint256 = rules.next_model_id - n
    for c: uint256 in selected:
        selected_ids.append(base_id + c)
    if len(selected) > 0:
        rules._pay_lineages(selected)
        new_live: DynArray[uint256, rules.MAX_ITEMS] = []
        for c: uint256 in selected:
            commit: uint256 = rules.commits[c]
            new_live.append((base_id + c) | ((commit & rules.M32) << 64) | ((round + 1) << 96) | (((commit >> 64) & rules.M64) << 160))
        rules.live = new_live
    log rules.Selected(round=round, models=selected_ids)
    log rules.Block(round=round, kind=rules.SETTLE, miner=miner, time=block.number, randomness=randomness, mixed=mixed)
    rules.round = round + 1
    rules.pairs = []
    rules.commits = []
    rules.digests = []
    rules._end_phase(rules.DEPOSIT)
    rules._draw_roles()


# ================================================================ appeals and shared checks


@internal
def _decide(round: uint256, appeals: DynArray[rules.CoTester, rules.MAX_TESTERS], appeal_scores: DynArray[int64, rules.MAX_APPEAL_SCORES]):
    """= derelayl.protocol.appeals.verify_appeals + decide: the appellants' lower median sets
    the round's scores; held rewards (and stakes) go back to the testers on it, the others' to
    the appellants on it (a tester's reward each, the forfeits shared, the remainder burned).
    A challenger's bond comes back if nobody reported, or if the appeal changed the medians
    (then the challenger shares the forfeits too); otherwise it is forfeited."""
    n: uint256 = len(rules.commits)
    m: uint256 = self._scored(n)
    # Verify one report from each appellant, in draw order (after the timeout, silent ones may be missing)
    rules._check_order(appeals, rules.appellants, "RoleError: 46")
    assert len(appeal_scores) == m * len(appeals), "MalformedError: 47"
    rows: DynArray[bytes32, rules.MAX_TESTERS] = self._check_reports(round, appeals, appeal_scores, m, "SignatureError: 48")
    final: bytes32 = rules.dispute_medians
    k: uint256 = len(appeals)
    if k > 0:
        medians: DynArray[int64, rules.MAX_ITEMS] = []
        for i: uint256 in range(m, bound=rules.MAX_ITEMS):
            column: DynArray[int64, rules.MAX_TESTERS] = []
            for c: uint256 in range(k, bound=rules.MAX_TESTERS):
                column.append(appeal_scores[c * m + i])
            medians.append(self._median(column))
        self._set_scores(medians, n)
        final = keccak256(abi_encode(medians))
    forfeited: uint256 = 0
    for j: uint256 in range(len(rules.dispute_testers), bound=rules.MAX_TESTERS):
        d: uint256 = rules.dispute_testers[j]
        tester: uint256 = d & rules.M32
        held: uint256 = ((d >> 64) & rules.M64) + (d >> 128)
        rules.escrow -= held
        if rules.dispute_rows[j] == final:
            rules.stored[tester] += held
            log rules.Transfer(sender=self, receiver=rules.key_of[tester], value=held)
        else:
            forfeited += held
    agree: DynArray[uint256, rules.MAX_TESTERS + 1] = []
    for i: uint256 in range(k, bound=rules.MAX_TESTERS):
        if rows[i] == final:
            agree.append(appeals[i].tester)
    amount: uint256 = rules.params.reward_per_test_case * rules.params.test_cases + rules.params.reward_per_tested_model * n
    for a: uint256 in agree:
        rules._pay_miner(a, amount)
    # the challenge bond: back (with a share) if the appeal changed the medians, back if nobody
    # reported, else forfeited to the appellants
    challenger: uint256 = rules.challenger
    if challenger != 0:
        bond: uint256 = rules.bond
        rules.escrow -= bond
        upheld: bool = final != rules.dispute_medians
        if upheld or k == 0:
            rules.stored[challenger - 1] += bond
            log rules.Transfer(sender=self, receiver=rules.key_of[challenger - 1], value=bond)
            if upheld:
                agree.append(challenger - 1)
        else:
            forfeited += bond
    share: uint256 = 0
    if len(agree) > 0:
        share = forfeited // len(agree)
    for a: uint256 in agree:
        rules.stored[a] += share
        log rules.Transfer(sender=self, receiver=rules.key_of[a], value=share)
    rules.burned += forfeited - share * len(agree)
    log rules.Transfer(sender=self, receiver=empty(address), value=forfeited - share * len(agree))
    rules.disputed = False
    rules.dispute_open = False
    rules.challenger = 0
    rules.bond = 0
    rules.dispute_testers = []
    rules.dispute_rows = []
    rules.appellants = []


@internal
def _draw_appellants(testers: DynArray[uint256, rules.MAX_TESTERS + 1]):
    """= derelayl.protocol.roles.draw_appellants: a partial Fisher-Yates shuffle of the miners
    not in ``testers`` (those that tested, and a challenger; neither owners nor trainers this
    round, registered by its role draw), in index order."""
    tag: uint256 = (rules.round + 1) << 32
    pool: DynArray[uint256, rules.MAX_PARTICIPANTS] = []
    for p: uint256 in range(rules.n_drawn, bound=rules.MAX_PARTICIPANTS):
        if rules.owner_pos[p] & ~rules.M32 == tag or rules._is_trainer(p) or p in testers:
            continue
        pool.append(p)
    count: uint256 = min(rules.params.appeal_testers, len(pool))
    drawn: DynArray[uint256, rules.MAX_TESTERS] = []
    for j: uint256 in range(count, bound=rules.MAX_TESTERS):
        i: uint256 = j + rules._word(rules.APPEAL, j) % (len(pool) - j)
        tmp: uint256 = pool[j]
        pool[j] = pool[i]
        pool[i] = tmp
        drawn.append(pool[j])
    rules.appellants = drawn


@view
@internal
def _scored(n: uint256) -> uint256:
    """Scores per report: the committed models, then (improvement rule) the live ones."""
    if rules.params.min_improvement > 0:
        return n + len(rules.live)
    return n


@view
@internal
def _check_cases(round: uint256, reporter: uint256, digest: bytes32):
    """= derelayl.protocol.validate.verify_committed_cases: with case commitments, a drawn
    tester's report names the digest it committed to in the deposit block (the producer of a
    timed-out test block that is no tester committed none)."""
    if not rules.params.case_commitments:
        return
    if reporter != rules.block_miners[rules.TEST] and reporter not in rules.co_testers:
        return
    assert rules.case_round[reporter] == round + 1, "MalformedError: 53"
    assert rules.case_digest[reporter] == digest, "MalformedError: 54"


@internal
def _check_reports(round: uint256, reports: DynArray[rules.CoTester, rules.MAX_TESTERS], flat: DynArray[int64, rules.MAX_APPEAL_SCORES], m: uint256, reason: String[24]) -> DynArray[bytes32, rules.MAX_TESTERS]:
    """Each report's signature (over its ``m`` scores in ``flat``), logged; the keccak of each."""
    rows: DynArray[bytes32, rules.MAX_TESTERS] = []
    for i: uint256 in range(len(reports), bound=rules.MAX_TESTERS):
        c: rules.CoTester = reports[i]
        own: DynArray[int64, rules.MAX_ITEMS] = []
        for j: uint256 in range(m, bound=rules.MAX_ITEMS):
            own.append(flat[i * m + j])
        row: bytes32 = keccak256(abi_encode(own))
        message: bytes32 = keccak256(abi_encode(rules.domain, rules.TAG_SCORES, round, c.digest, row))
        assert rules._signer(message, c.v, c.r, c.s) == rules.key_of[c.tester], reason
        log rules.ScoresLogged(round=round, tester=c.tester, n_test_cases=rules.params.test_cases, digest=c.digest, scores=own, v=c.v, r=c.r, s=c.s)
        rows.append(row)
    return rows


@pure
@internal
def _median(column: DynArray[int64, rules.MAX_TESTERS]) -> int64:
    """The lower median (insertion sort: testers are few)."""
    values: DynArray[int64, rules.MAX_TESTERS] = column
    for k: uint256 in range(1, rules.MAX_TESTERS):
        if k >= len(values):
            break
        j: uint256 = k
        for _: uint256 in range(rules.MAX_TESTERS):
            if j == 0 or values[j - 1] <= values[j]:
                break
            tmp: int64 = values[j]
            values[j] = values[j - 1]
            values[j - 1] = tmp
            j -= 1
    return values[(len(values) - 1) // 2]


@internal
def _set_scores(medians: DynArray[int64, rules.MAX_ITEMS], n: uint256):
    """The round's scores; the improvement rule flags (bit 128) a child below its parent's
    median + the margin, never selected (= derelayl.protocol.scores.compute_eligible)."""
    margin: int256 = convert(rules.params.min_improvement, int256)
    for i: uint256 in range(n, bound=rules.MAX_ITEMS):
        word: uint256 = (rules.commits[i] & rules.M64) | (convert(convert(medians[i], int256) + rules.BIAS, uint256) << 64)
        if margin > 0:
            parent: uint256 = rules.pairs[(word >> 32) & rules.M32] & rules.M32
            if convert(medians[i], int256) < convert(medians[n + parent], int256) + margin:
                word = word | (1 << 128)
        rules.commits[i] = word
