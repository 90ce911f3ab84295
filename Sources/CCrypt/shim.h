#ifndef PORTCULLIS_CCRYPT_SHIM_H
#define PORTCULLIS_CCRYPT_SHIM_H
// libxcrypt (crypt(5): bcrypt $2b$/$2y$, yescrypt $y$, sha512-crypt $6$). Thin wrappers so Swift never has to size
// or zero `struct crypt_data` itself.
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

/// Hashes `phrase` with the settings (prefix, cost, salt) of `setting` into `out` (CRYPT_OUTPUT_SIZE bytes).
/// Returns 0 on success, -1 on failure (unknown or malformed setting). Thread-safe: state lives on the heap.
static inline int ccrypt_hash(const char *phrase, const char *setting, char *out, size_t outSize) {
    struct crypt_data *data = calloc(1, sizeof(struct crypt_data));
    if (!data) return -1;
    char *result = crypt_r(phrase, setting, data);
    int rc = -1;
    // libxcrypt returns a string starting with '*' on failure (never a valid hash).
    if (result && result[0] != '*' && strlen(result) < outSize) {
        strcpy(out, result);
        rc = 0;
    }
    explicit_bzero(data, sizeof(struct crypt_data));
    free(data);
    return rc;
}

/// A fresh setting string for `prefix` ("$2b$", "$y$", "$6$") at `cost` (0: the method's default), random salt
/// from the OS. Returns 0 on success.
static inline int ccrypt_gensalt(const char *prefix, unsigned long cost, char *out, int outSize) {
    return crypt_gensalt_rn(prefix, cost, NULL, 0, out, outSize) ? 0 : -1;
}

static inline int ccrypt_output_size(void) { return CRYPT_OUTPUT_SIZE; }
static inline int ccrypt_gensalt_output_size(void) { return CRYPT_GENSALT_OUTPUT_SIZE; }
#endif
