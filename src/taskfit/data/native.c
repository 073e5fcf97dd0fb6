/* The data check's inner loops in C: MinHash signatures of a batch of texts, a batch's look-alike
 * candidates verified against the index, the index's pending table and its flush, the words' digests
 * and the token counts of ASCII texts. Compiled once on the user's machine and loaded with ctypes
 * (taskfit/data/native.py); the numpy and Python code in lookalike.py and tokens.py gives the same
 * values and is used where no C compiler is found. No Python API: plain arrays in and out. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t crc_table[256];

static void crc_init(void) {  /* the table, made at the first call */
    if (crc_table[1]) return;
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static inline uint32_t crc_byte(uint32_t c, uint32_t byte) {
    return crc_table[(c ^ byte) & 0xFF] ^ (c >> 8);
}

/* zlib's crc32 of the UTF-8 bytes of code points p[0..n) */
static uint32_t crc32_utf8(const uint32_t *p, int64_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (int64_t i = 0; i < n; i++) {
        uint32_t cp = p[i];
        if (cp < 0x80) {
            c = crc_byte(c, cp);
        } else if (cp < 0x800) {
            c = crc_byte(c, 0xC0 | (cp >> 6));
            c = crc_byte(c, 0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            c = crc_byte(c, 0xE0 | (cp >> 12));
            c = crc_byte(c, 0x80 | ((cp >> 6) & 0x3F));
            c = crc_byte(c, 0x80 | (cp & 0x3F));
        } else {
            c = crc_byte(c, 0xF0 | (cp >> 18));
            c = crc_byte(c, 0x80 | ((cp >> 12) & 0x3F));
            c = crc_byte(c, 0x80 | ((cp >> 6) & 0x3F));
            c = crc_byte(c, 0x80 | (cp & 0x3F));
        }
    }
    return c ^ 0xFFFFFFFFu;
}

static inline uint32_t fmix(uint32_t h) {  /* MurmurHash3's 32-bit finalizer */
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* MinHash signatures of n texts given as code points (points, each text's length in lens), over
 * their distinct shingles of k characters (a text shorter than k: itself, one shingle): sigs
 * (n x num_perm, row-major) and sizes (distinct shingles a text). Permutation p maps a shingle's
 * hash h to a[p] * h + b[p] mod 2^32; h is fmix of the shingle's CRC-32. Returns 0, or -1 when
 * out of memory. */
int signatures(const uint32_t *points, const int64_t *lens, int64_t n, int64_t k,
               const uint32_t *a, const uint32_t *b, int64_t num_perm, uint32_t *sigs, int64_t *sizes) {
    crc_init();
    int64_t longest = 0;
    for (int64_t t = 0; t < n; t++) if (lens[t] > longest) longest = lens[t];
    int64_t cap = 16;
    while (cap < 2 * (longest + 1)) cap <<= 1;
    int64_t *slot_start = malloc(cap * sizeof(int64_t));  /* a slot's shingle start, -1 empty */
    uint32_t *slot_crc = malloc(cap * sizeof(uint32_t));
    uint32_t *hashes = malloc((longest + 1) * sizeof(uint32_t));
    if (!slot_start || !slot_crc || !hashes) { free(slot_start); free(slot_crc); free(hashes); return -1; }
    int64_t offset = 0;
    for (int64_t t = 0; t < n; t++) {
        const uint32_t *text = points + offset;
        int64_t len = lens[t];
        offset += len;
        int64_t width = len < k ? len : k;
        int64_t count = len - k + 1 < 1 ? 1 : len - k + 1;
        int64_t size = 2 * count < 16 ? 16 : 2 * count, mask;
        int64_t want = 16;
        while (want < size) want <<= 1;
        mask = want - 1;
        for (int64_t s = 0; s < want; s++) slot_start[s] = -1;
        int64_t distinct = 0;
        for (int64_t s = 0; s < count; s++) {  /* each distinct shingle once, by its CRC and its characters */
            uint32_t c = crc32_utf8(text + s, width);
            uint64_t at = ((uint64_t)c * 0x9E3779B97F4A7C15ull) >> 40 & (uint64_t)mask;
            int seen = 0;
            while (slot_start[at] >= 0) {
                if (slot_crc[at] == c && !memcmp(text + slot_start[at], text + s, width * sizeof(uint32_t))) { seen = 1; break; }
                at = (at + 1) & (uint64_t)mask;
            }
            if (seen) continue;
            slot_start[at] = s;
            slot_crc[at] = c;
            hashes[distinct++] = fmix(c);
        }
        sizes[t] = distinct;
        uint32_t *out = sigs + t * num_perm;
        for (int64_t p = 0; p < num_perm; p++) out[p] = 0xFFFFFFFFu;
        for (int64_t d = 0; d < distinct; d++) {
            uint32_t h = hashes[d];
            for (int64_t p = 0; p < num_perm; p++) {
                uint32_t v = a[p] * h + b[p];
                out[p] = v < out[p] ? v : out[p];
            }
        }
    }
    free(slot_start);
    free(slot_crc);
    free(hashes);
    return 0;
}

#define AHEAD 4  /* candidates' signatures fetched ahead of the one compared */
#define BLOCK 8  /* rows whose band hashes' buckets are fetched together */

static inline void fetch(const void *const *chunks, int64_t chunk_rows, int64_t bytes, int64_t k) {
    const char *sig = (const char *)chunks[k / chunk_rows] + (k % chunk_rows) * bytes;
    for (int64_t line = 0; line < bytes; line += 64) __builtin_prefetch(sig + line);
}

/* An ascending sort of a few values in place: insertion for up to 64 (a row's few dozen candidates,
 * a text's few dozen words), qsort above (a popular row's, a long text's). */
#define SMALL_SORT(name, type)                                                   \
    static int name##_order(const void *a, const void *b) {                      \
        type x = *(const type *)a, y = *(const type *)b;                         \
        return (x > y) - (x < y);                                                \
    }                                                                            \
    static void name(type *v, int64_t n) {                                       \
        if (n > 64) { qsort(v, (size_t)n, sizeof(type), name##_order); return; } \
        for (int64_t i = 1; i < n; i++) {                                        \
            type x = v[i];                                                       \
            int64_t j = i - 1;                                                   \
            while (j >= 0 && v[j] > x) { v[j + 1] = v[j]; j--; }                 \
            v[j + 1] = x;                                                        \
        }                                                                        \
    }
SMALL_SORT(sort_rows, int64_t)
SMALL_SORT(sort_u32, uint32_t)

/* The look-alike candidates of a batch of n rows and their signatures' equal values. A row's
 * candidates are the indexed rows under any of its b band hashes (keys, n x b): every entry of
 * the sorted array sorted_h (m hashes, their rows in sorted_i) equal to the hash, found by a
 * binary search within the hash's bucket of starts (the array's hashes by their top top_bits
 * bits), and pended[r * b + j] where it is not -1. Each (row, candidate) pair once, by row then
 * candidate, into whose, rows and same (the count of equal values between the row's signature,
 * sigs row r of num_perm uint32, and the candidate's, stored in chunks of chunk_rows rows of
 * stored_bytes-wide values: 4, or 2 for the values' low 16 bits). Writes at most cap pairs and
 * returns how many there are (call again with more room when that is above cap), or -1 when out
 * of memory. */
int64_t candidates(const uint64_t *keys, int64_t n, int64_t b, const uint64_t *sorted_h, const int32_t *sorted_i,
                   int64_t m, const int32_t *starts, int64_t top_bits, const int64_t *pended,
                   const uint32_t *sigs, int64_t num_perm, const void *const *chunks, int64_t chunk_rows,
                   int64_t stored_bytes, int64_t *whose, int64_t *rows, int64_t *same, int64_t cap) {
    int64_t room = 64, total = 0;
    int64_t *found = malloc(room * sizeof(int64_t));
    int32_t *bounds = malloc(2 * BLOCK * (b > 0 ? b : 1) * sizeof(int32_t));  /* each hash's bucket */
    if (!found || !bounds) { free(found); free(bounds); return -1; }
    for (int64_t r = 0; r < n; r++) {
        if (m > 0 && r % BLOCK == 0) {  /* the next BLOCK rows' buckets: their reads in flight together */
            int64_t end = (r + BLOCK < n ? r + BLOCK : n) * b;
            for (int64_t i = r * b; i < end; i++) __builtin_prefetch(starts + (keys[i] >> (64 - top_bits)));
            for (int64_t i = r * b; i < end; i++) {
                uint64_t top = keys[i] >> (64 - top_bits);
                int32_t lo = starts[top], hi = starts[top + 1];
                bounds[2 * (i - r * b)] = lo;
                bounds[2 * (i - r * b) + 1] = hi;
                if (lo < hi) {
                    __builtin_prefetch(sorted_h + lo);
                    __builtin_prefetch(sorted_h + hi - 1);
                    __builtin_prefetch(sorted_i + lo);
                }
            }
        }
        int64_t count = 0;
        for (int64_t j = 0; j < b; j++) {
            uint64_t key = keys[r * b + j];
            if (m > 0) {
                const int32_t *bound = bounds + 2 * ((r % BLOCK) * b + j);
                int64_t lo = bound[0], hi = bound[1];
                while (lo < hi) {
                    int64_t mid = (lo + hi) >> 1;
                    if (sorted_h[mid] < key) lo = mid + 1; else hi = mid;
                }
                for (; lo < m && sorted_h[lo] == key; lo++) {
                    if (count == room) {
                        int64_t *more = realloc(found, 2 * room * sizeof(int64_t));
                        if (!more) { free(found); free(bounds); return -1; }
                        found = more; room *= 2;
                    }
                    found[count++] = sorted_i[lo];
                }
            }
            int64_t p = pended[r * b + j];
            if (p >= 0) {
                if (count == room) {
                    int64_t *more = realloc(found, 2 * room * sizeof(int64_t));
                    if (!more) { free(found); free(bounds); return -1; }
                    found = more; room *= 2;
                }
                found[count++] = p;
            }
        }
        sort_rows(found, count);
        int64_t distinct = 0;
        for (int64_t i = 0; i < count; i++)
            if (i == 0 || found[i] != found[i - 1]) found[distinct++] = found[i];
        const uint32_t *own = sigs + r * num_perm;
        int64_t bytes = num_perm * stored_bytes;
        /* a candidate's signature is a read from memory: AHEAD of them in flight */
        for (int64_t i = 0; i < AHEAD && i < distinct; i++) fetch(chunks, chunk_rows, bytes, found[i]);
        for (int64_t i = 0; i < distinct; i++) {
            if (i + AHEAD < distinct) fetch(chunks, chunk_rows, bytes, found[i + AHEAD]);
            if (total < cap) {
                int64_t k = found[i], equal = 0;
                const void *chunk = chunks[k / chunk_rows];
                int64_t at = (k % chunk_rows) * num_perm;
                if (stored_bytes == 4) {
                    const uint32_t *other = (const uint32_t *)chunk + at;
                    for (int64_t q = 0; q < num_perm; q++) equal += other[q] == own[q];
                } else {
                    const uint16_t *other = (const uint16_t *)chunk + at;
                    for (int64_t q = 0; q < num_perm; q++) equal += other[q] == (uint16_t)own[q];
                }
                whose[total] = r;
                rows[total] = k;
                same[total] = equal;
            }
            total++;
        }
    }
    free(found);
    free(bounds);
    return total;
}

/* The index's flush, in place: the sorted hashes h (m, their rows in i, both with room for m + k)
 * and the new ones nk (k, sorted, none equal to another, their rows in nr) merged from the back,
 * a new hash after the old ones equal to it (np.searchsorted's right side, as np.insert puts
 * them); and starts, where each bucket of the merged hashes by their top top_bits bits begins
 * ((1 << top_bits) + 1 entries: np.searchsorted's left side of each bucket's first hash, then the
 * length). With same_bits, starts holds the buckets of h by as many bits, and only the new hashes
 * are counted into it; else it is made by a pass over the merged hashes. Returns 0, or -1 when
 * out of memory. */
int merge(uint64_t *h, int32_t *i, int64_t m, const uint64_t *nk, const int32_t *nr, int64_t k,
          int64_t top_bits, int32_t *starts, int64_t same_bits) {
    int64_t a = m - 1, c = k - 1, o = m + k - 1, buckets = (int64_t)1 << top_bits;
    while (c >= 0) {
        if (a >= 0 && h[a] > nk[c]) { h[o] = h[a]; i[o] = i[a]; a--; }
        else { h[o] = nk[c]; i[o] = nr[c]; c--; }
        o--;
    }
    if (same_bits) {  /* each bucket starts later by the new hashes in the buckets before it */
        int64_t *before = calloc(buckets + 1, sizeof(int64_t));
        if (!before) return -1;
        for (int64_t j = 0; j < k; j++) before[(int64_t)(nk[j] >> (64 - top_bits)) + 1]++;
        int64_t sum = 0;
        for (int64_t t = 0; t <= buckets; t++) { sum += before[t]; starts[t] += (int32_t)sum; }
        free(before);
        return 0;
    }
    int64_t bucket = 0;
    for (int64_t j = 0; j < m + k; j++) {
        int64_t top = (int64_t)(h[j] >> (64 - top_bits));
        while (bucket <= top) starts[bucket++] = (int32_t)j;
    }
    while (bucket <= buckets) starts[bucket++] = (int32_t)(m + k);
    return 0;
}

/* The index's pending table (lookalike._Pending): open addressing with linear probing, a slot the
 * top `bits` bits of the key times 0x9E3779B97F4A7C15 (Fibonacci hashing), -1 an empty slot's row. */
static inline uint64_t slot_of(uint64_t key, int64_t bits) {
    return (key * 0x9E3779B97F4A7C15ull) >> (64 - bits);
}

/* The row under each of keys[0..n) in the table, -1 where there is none. */
void pending_get(const uint64_t *keys, int64_t n, const uint64_t *tkeys, const int32_t *trows, int64_t bits,
                 int64_t *out) {
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = keys[i], s = slot_of(k, bits);
        int64_t row = -1;
        while (trows[s] >= 0) {
            if (tkeys[s] == k) { row = trows[s]; break; }
            s = (s + 1) & mask;
        }
        out[i] = row;
    }
}

/* Put each of keys[0..n) under its row unless the table has it already (an earlier one of them
 * included: the first row under a key stays); return how many were put. The caller leaves room. */
int64_t pending_add(const uint64_t *keys, const int32_t *rows, int64_t n, uint64_t *tkeys, int32_t *trows,
                    int64_t bits) {
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    int64_t added = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = keys[i], s = slot_of(k, bits);
        while (trows[s] >= 0 && tkeys[s] != k) s = (s + 1) & mask;
        if (trows[s] < 0) {
            tkeys[s] = k;
            trows[s] = rows[i];
            added++;
        }
    }
    return added;
}

/* BLAKE2b (RFC 7693) with an 8-byte digest and no key: hashlib.blake2b(data, digest_size=8),
 * its digest read as a little-endian integer. */
static const uint64_t blake2b_iv[8] = {
    0x6A09E667F3BCC908ull, 0xBB67AE8584CAA73Bull, 0x3C6EF372FE94F82Bull, 0xA54FF53A5F1D36F1ull,
    0x510E527FADE682D1ull, 0x9B05688C2B3E6C1Full, 0x1F83D9ABFB41BD6Bull, 0x5BE0CD19137E2179ull};
static const uint8_t blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

#define B2G(a, b, c, d, x, y)                        \
    do {                                             \
        v[a] = v[a] + v[b] + (x);                    \
        v[d] = rotr64(v[d] ^ v[a], 32);              \
        v[c] = v[c] + v[d];                          \
        v[b] = rotr64(v[b] ^ v[c], 24);              \
        v[a] = v[a] + v[b] + (y);                    \
        v[d] = rotr64(v[d] ^ v[a], 16);              \
        v[c] = v[c] + v[d];                          \
        v[b] = rotr64(v[b] ^ v[c], 63);              \
    } while (0)

static void blake2b_compress(uint64_t h[8], const uint8_t *block, uint64_t t, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= t;  /* the count's high word stays 0: a text under 2^64 bytes */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = blake2b_sigma[r];
        B2G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

static uint64_t blake2b_8(const uint8_t *in, int64_t n) {
    uint64_t h[8];
    uint8_t block[128];
    for (int i = 0; i < 8; i++) h[i] = blake2b_iv[i];
    h[0] ^= 0x01010000ull ^ 8;  /* fanout 1, depth 1, no key, an 8-byte digest */
    uint64_t t = 0;
    while (n > 128) {
        t += 128;
        blake2b_compress(h, in, t, 0);
        in += 128;
        n -= 128;
    }
    memset(block, 0, sizeof block);
    if (n > 0) memcpy(block, in, (size_t)n);
    t += (uint64_t)n;
    blake2b_compress(h, block, t, 1);
    return h[0];
}

static uint32_t crc32_bytes(const uint8_t *p, int64_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (int64_t i = 0; i < n; i++) c = crc_byte(c, p[i]);
    return c ^ 0xFFFFFFFFu;
}

/* lookalike._word_digest for ASCII texts: text i is bytes [ends[i-1], ends[i]) of `text`; each byte
 * mapped by `table` (no letter, digit or _: a space; letters lower-cased), the words the runs of
 * other bytes. digests[i]: BLAKE2b of the words joined by single spaces; then its words' distinct
 * CRC-32s, sorted, the `kept` smallest, appended to `hashes` (room: a word a byte and one more a
 * text), hash_ends[i] where they end. `joined`: room for the longest text. */
void word_digests(const uint8_t *text, const int64_t *ends, int64_t n, const uint8_t *table, int64_t kept,
                  int64_t *digests, uint32_t *hashes, int64_t *hash_ends, uint8_t *joined) {
    crc_init();
    int64_t start = 0, out = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t end = ends[i], len = 0, words = 0, word_start = -1;
        uint32_t *crcs = hashes + out;
        for (int64_t j = start; j <= end; j++) {
            uint8_t c = j < end ? table[text[j]] : ' ';
            if (c != ' ') {
                if (word_start < 0) {
                    if (len) joined[len++] = ' ';
                    word_start = len;
                }
                joined[len++] = c;
            } else if (word_start >= 0) {
                crcs[words++] = crc32_bytes(joined + word_start, len - word_start);
                word_start = -1;
            }
        }
        digests[i] = (int64_t)blake2b_8(joined, len);
        sort_u32(crcs, words);
        int64_t distinct = 0;
        for (int64_t a = 0; a < words && distinct < kept; a++)
            if (!distinct || crcs[a] != crcs[distinct - 1]) crcs[distinct++] = crcs[a];
        out += distinct;
        hash_ends[i] = out;
        start = end;
    }
}

/* The pending table's hashes and rows (its used slots), sorted by hash (all distinct): four passes
 * of a radix sort on 16 bits each, into keys and rows (room for cap). Returns how many, or -1 when
 * out of memory or there are more than cap. */
int64_t pending_sorted(const uint64_t *tkeys, const int32_t *trows, int64_t bits, uint64_t *keys, int32_t *rows,
                       int64_t cap) {
    int64_t size = (int64_t)1 << bits, n = 0;
    for (int64_t s = 0; s < size; s++)
        if (trows[s] >= 0) {
            if (n == cap) return -1;
            keys[n] = tkeys[s];
            rows[n] = trows[s];
            n++;
        }
    uint64_t *other_keys = malloc((size_t)(n ? n : 1) * sizeof *other_keys);
    int32_t *other_rows = malloc((size_t)(n ? n : 1) * sizeof *other_rows);
    int64_t *count = malloc(65536 * sizeof *count);
    if (!other_keys || !other_rows || !count) {
        free(other_keys);
        free(other_rows);
        free(count);
        return -1;
    }
    uint64_t *from_k = keys, *to_k = other_keys;
    int32_t *from_r = rows, *to_r = other_rows;
    for (int shift = 0; shift < 64; shift += 16) {
        memset(count, 0, 65536 * sizeof *count);
        for (int64_t i = 0; i < n; i++) count[(from_k[i] >> shift) & 0xFFFF]++;
        int64_t at = 0;
        for (int64_t d = 0; d < 65536; d++) {
            int64_t c = count[d];
            count[d] = at;
            at += c;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t to = count[(from_k[i] >> shift) & 0xFFFF]++;
            to_k[to] = from_k[i];
            to_r[to] = from_r[i];
        }
        uint64_t *tk = from_k; from_k = to_k; to_k = tk;
        int32_t *tr = from_r; from_r = to_r; to_r = tr;
    }
    /* four passes: the sorted arrays are keys and rows again */
    free(other_keys);
    free(other_rows);
    free(count);
    return n;
}

/* Token counts piece by piece for ASCII texts (taskfit.data.tokens.PieceCounter): GPT-2's
 * pre-tokenizing expression ('s|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^sLN]+|s+(?!S)|s+) over texts of
 * printable ASCII, tab and newlines (L the letters, N the digits, s tab, \n, \r and space), and a
 * table of the pieces' counts (the piece's bytes kept, so a lookup is exact). A table is made by
 * pieces_new, filled by pieces_learn and freed by pieces_free. */
typedef struct {
    int64_t bits, used;
    int64_t *offsets;  /* a slot's piece in `bytes`, -1 empty */
    int32_t *lengths, *counts;
    uint64_t *hashes;
    char *bytes;
    int64_t size, cap;
} piece_table;

static uint64_t piece_hash(const uint8_t *p, int64_t n) {  /* FNV-1a, then fmix64 */
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

void *pieces_new(int64_t bits) {
    piece_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    int64_t slots = (int64_t)1 << bits;
    t->bits = bits;
    t->offsets = malloc(slots * sizeof *t->offsets);
    t->lengths = malloc(slots * sizeof *t->lengths);
    t->counts = malloc(slots * sizeof *t->counts);
    t->hashes = malloc(slots * sizeof *t->hashes);
    t->cap = 1 << 20;
    t->bytes = malloc(t->cap);
    if (!t->offsets || !t->lengths || !t->counts || !t->hashes || !t->bytes) {
        free(t->offsets); free(t->lengths); free(t->counts); free(t->hashes); free(t->bytes); free(t);
        return NULL;
    }
    memset(t->offsets, 0xFF, slots * sizeof *t->offsets);
    return t;
}

void pieces_free(void *table) {
    piece_table *t = table;
    if (!t) return;
    free(t->offsets); free(t->lengths); free(t->counts); free(t->hashes); free(t->bytes); free(t);
}

/* How many pieces the table holds. */
int64_t pieces_held(void *table) { return ((piece_table *)table)->used; }

static int64_t piece_slot(const piece_table *t, const uint8_t *p, int64_t n, uint64_t h) {
    uint64_t mask = ((uint64_t)1 << t->bits) - 1, s = h & mask;
    while (t->offsets[s] >= 0) {
        if (t->hashes[s] == h && t->lengths[s] == n && !memcmp(t->bytes + t->offsets[s], p, (size_t)n)) return (int64_t)s;
        s = (s + 1) & mask;
    }
    return -1 - (int64_t)s;  /* not held: -1 - the empty slot where it would go */
}

/* Put a piece under its count. Returns 0, 1 when the table is full (at most half its slots used: the
 * caller makes a new one), -1 when out of memory. */
int pieces_learn(void *table, const uint8_t *p, int64_t n, int64_t count) {
    piece_table *t = table;
    if (2 * (t->used + 1) > ((int64_t)1 << t->bits)) return 1;
    uint64_t h = piece_hash(p, n);
    int64_t s = piece_slot(t, p, n, h);
    if (s >= 0) return 0;
    s = -1 - s;
    if (t->size + n > t->cap) {
        int64_t cap = t->cap;
        while (t->size + n > cap) cap *= 2;
        char *grown = realloc(t->bytes, (size_t)cap);
        if (!grown) return -1;
        t->bytes = grown;
        t->cap = cap;
    }
    memcpy(t->bytes + t->size, p, (size_t)n);
    t->offsets[s] = t->size;
    t->lengths[s] = (int32_t)n;
    t->counts[s] = (int32_t)count;
    t->hashes[s] = h;
    t->size += n;
    t->used++;
    return 0;
}

static inline int is_letter(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static inline int is_other(uint8_t c) { return !is_letter(c) && !is_digit(c) && !is_space(c); }

/* The length of the piece starting at text[i] (end: the text's end). */
static int64_t next_piece(const uint8_t *s, int64_t i, int64_t end) {
    uint8_t c = s[i];
    if (c == '\'' && i + 1 < end) {
        uint8_t d = s[i + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return 2;
        if (i + 2 < end) {
            uint8_t e = s[i + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return 3;
        }
    }
    int64_t j = i + (c == ' ' && i + 1 < end && !is_space(s[i + 1]) ? 1 : 0);  /* " ?" then a class run */
    uint8_t first = s[j];
    if (!is_space(first)) {
        int (*same)(uint8_t) = is_letter(first) ? is_letter : is_digit(first) ? is_digit : is_other;
        int64_t k = j + 1;
        while (k < end && same(s[k])) k++;
        return k - i;
    }
    int64_t k = i + 1;  /* whitespace: the run, less its last character when a non-space follows it */
    while (k < end && is_space(s[k])) k++;
    if (k == end || k - i == 1) return k - i;
    return k - i - 1;
}

/* The token count of each text i (bytes [ends[i-1], ends[i]) of `text`) from the pieces the table
 * holds; each piece it does not hold is listed (its text, start and length, at most `cap`) and left
 * out of the count. Returns how many pieces were missing (more than cap: only cap listed). */
int64_t pieces_count(void *table, const uint8_t *text, const int64_t *ends, int64_t n, int64_t *counts,
                     int64_t *miss_text, int64_t *miss_start, int64_t *miss_len, int64_t cap) {
    piece_table *t = table;
    int64_t start = 0, missing = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t end = ends[i], total = 0;
        for (int64_t at = start; at < end;) {
            int64_t len = next_piece(text, at, end);
            int64_t s = piece_slot(t, text + at, len, piece_hash(text + at, len));
            if (s >= 0) {
                total += t->counts[s];
            } else {
                if (missing < cap) {
                    miss_text[missing] = i;
                    miss_start[missing] = at;
                    miss_len[missing] = len;
                }
                missing++;
            }
            at += len;
        }
        counts[i] = total;
        start = end;
    }
    return missing;
}
