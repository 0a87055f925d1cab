/// Cash Markets chart game: on-chain commitments and one random seed per round.
///
/// The operator publishes each seed chain's terminal hash (`commit_chain`) before any of its
/// rounds, and, in each round's commit phase, the round's commitment (the chain link its secret
/// seed must hash to) together with a request for a seed drawn by Aptos on-chain randomness
/// (`draw_seed`). The server mixes that seed into the round seed (docs/fairness.md). A seed is drawn
/// at most once per (game, round) and can never be replaced, so the operator cannot re-roll a
/// round it does not like; anyone can read it back with the `seed_of` view function.
module cashmarkets::round_seed {
    use std::signer;
    use std::string::String;
    use std::vector;
    use aptos_framework::event;
    use aptos_framework::randomness;
    use aptos_framework::transaction_context;
    use aptos_std::table::{Self, Table};

    /// Only the operator account that published the module may commit and draw.
    const E_NOT_OPERATOR: u64 = 1;
    /// This (game, round) already has its seed.
    const E_ALREADY_DRAWN: u64 = 2;
    /// A commitment is a SHA-256 hash: 32 bytes.
    const E_BAD_COMMITMENT: u64 = 3;
    /// This (game, chain) was already committed.
    const E_ALREADY_COMMITTED: u64 = 4;

    /// Bytes drawn per round.
    const SEED_BYTES: u64 = 32;

    struct RoundKey has copy, drop, store {
        game: String,
        round: u64,
    }

    struct ChainKey has copy, drop, store {
        game: String,
        chain: u64,
    }

    struct Draw has copy, drop, store {
        seed: vector<u8>,
        commitment: vector<u8>,
        txn_hash: vector<u8>,
    }

    struct Commit has copy, drop, store {
        commitment: vector<u8>,
        txn_hash: vector<u8>,
    }

    struct Registry has key {
        chains: Table<ChainKey, Commit>,
        draws: Table<RoundKey, Draw>,
    }

    #[event]
    struct ChainCommitted has drop, store {
        game: String,
        chain: u64,
        commitment: vector<u8>,
        length: u64,
    }

    #[event]
    struct SeedDrawn has drop, store {
        game: String,
        round: u64,
        commitment: vector<u8>,
        seed: vector<u8>,
    }

    fun init_module(operator: &signer) {
        move_to(operator, Registry { chains: table::new(), draws: table::new() });
    }

    /// Publish the terminal hash of a seed chain of `length` rounds.
    public entry fun commit_chain(
        operator: &signer, game: String, chain: u64, commitment: vector<u8>, length: u64
    ) acquires Registry {
        assert!(signer::address_of(operator) == @cashmarkets, E_NOT_OPERATOR);
        assert!(vector::length(&commitment) == 32, E_BAD_COMMITMENT);
        let registry = borrow_global_mut<Registry>(@cashmarkets);
        let key = ChainKey { game, chain };
        assert!(!table::contains(&registry.chains, key), E_ALREADY_COMMITTED);
        let txn_hash = transaction_context::get_transaction_hash();
        table::add(&mut registry.chains, key, Commit { commitment, txn_hash });
        event::emit(ChainCommitted { game, chain, commitment, length });
    }

    /// Publish a round's commitment and draw its seed.
    ///
    /// Private entry (a `#[randomness]` function may not be public: no other module can call it,
    /// look at the outcome and abort). Undergasing: every check that can abort runs before the
    /// draw, and the path after it costs the same whatever the bytes are (one fixed-size draw,
    /// one table insert of fixed-size values, one event; no branch on the value), so a tight gas
    /// limit cannot make only some outcomes fail. `max_gas` is the deposit the chain holds for it;
    /// the client submits with exactly that `max_gas_amount`.
    #[randomness(max_gas = 20000)]
    entry fun draw_seed(
        operator: &signer, game: String, round: u64, commitment: vector<u8>
    ) acquires Registry {
        assert!(signer::address_of(operator) == @cashmarkets, E_NOT_OPERATOR);
        assert!(vector::length(&commitment) == 32, E_BAD_COMMITMENT);
        let registry = borrow_global_mut<Registry>(@cashmarkets);
        let key = RoundKey { game, round };
        assert!(!table::contains(&registry.draws, key), E_ALREADY_DRAWN);
        let seed = randomness::bytes(SEED_BYTES);
        let txn_hash = transaction_context::get_transaction_hash();
        table::add(&mut registry.draws, key, Draw { seed, commitment, txn_hash });
        event::emit(SeedDrawn { game, round, commitment, seed });
    }

    /// (seed, commitment, hash of the drawing transaction); three empty vectors if not drawn yet.
    #[view]
    public fun seed_of(game: String, round: u64): (vector<u8>, vector<u8>, vector<u8>) acquires Registry {
        let registry = borrow_global<Registry>(@cashmarkets);
        let key = RoundKey { game, round };
        if (!table::contains(&registry.draws, key)) {
            return (vector[], vector[], vector[])
        };
        let draw = table::borrow(&registry.draws, key);
        (draw.seed, draw.commitment, draw.txn_hash)
    }

    /// (terminal hash, hash of the publishing transaction) of a chain; empty vectors if not committed.
    #[view]
    public fun chain_commitment(game: String, chain: u64): (vector<u8>, vector<u8>) acquires Registry {
        let registry = borrow_global<Registry>(@cashmarkets);
        let key = ChainKey { game, chain };
        if (!table::contains(&registry.chains, key)) {
            return (vector[], vector[])
        };
        let commit = table::borrow(&registry.chains, key);
        (commit.commitment, commit.txn_hash)
    }
}
