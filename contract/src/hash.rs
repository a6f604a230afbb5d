//! A fixed hash of a key, the same in every process and every build (not the std hasher, whose
//! seed differs per process): FNV-1a, then the splitmix64 finalizer (FNV's last byte reaches only
//! the low bits). The controller places a rollout's analyses by its uid with it; sidecars sample
//! request ids with it, so every version keeps the same requests.

pub fn stable_hash(key: &str) -> u64 {
    let mut h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
