#ifndef C_RAPPORT_OPENSSL_SHIM_H
#define C_RAPPORT_OPENSSL_SHIM_H

// Real functions wrapping OpenSSL macros (and one variadic call) that the Swift
// Clang importer cannot expose.

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/bio.h>

/// SSL_set_tlsext_host_name: sets the SNI extension value.
int rapport_SSL_set_tlsext_host_name(SSL *ssl, const char *name);

/// SSL_CTX_set_min_proto_version / SSL_CTX_set_max_proto_version (0 = unrestricted).
int rapport_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
int rapport_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version);

/// SSL_CTX_set_mode; returns the new mode bitmask.
long rapport_SSL_CTX_set_mode(SSL_CTX *ctx, long mode);

/// Sets SSL_OP_NO_RENEGOTIATION (its value is a 64-bit shift expression Swift cannot import).
void rapport_SSL_CTX_disable_renegotiation(SSL_CTX *ctx);

/// SSL_CTX_add1_chain_cert: appends an intermediate to the context's chain (reference is up-ref'd).
int rapport_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *cert);

/// BIO_get_mem_data: pointer to and length of a memory BIO's readable contents.
long rapport_BIO_get_mem_data(BIO *bio, char **data);

/// EVP_EC_gen("P-256") (a macro over the variadic EVP_PKEY_Q_keygen).
EVP_PKEY *rapport_EVP_EC_gen_P256(void);

/// Adds a v3 extension given in OpenSSL config syntax (e.g. "critical,CA:TRUE"),
/// with `issuer` as the issuer context (needed for authorityKeyIdentifier).
/// Returns 1 on success, 0 on failure (error queue populated).
int rapport_X509_add_ext_conf(X509 *cert, X509 *issuer, int nid, const char *value);

#endif
