// Keys generated in the test, never stored: an EC key pair signing as SendGrid's Event Webhook
// does (ECDSA, SHA-256, DER signature in base64; public key base64 DER as SendGrid shows it).
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "base64.h"

namespace fakes {

class EcKey {
 public:
  explicit EcKey(const char* curve = "P-256") : key_(EVP_EC_gen(curve), EVP_PKEY_free) {
    if (!key_) throw std::runtime_error("EVP_EC_gen failed");
  }
  std::string public_base64() const {
    unsigned char* der = nullptr;
    const int size = i2d_PUBKEY(key_.get(), &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(size));
    OPENSSL_free(der);
    return mailrelay::base64_encode(out);
  }
  // base64 of the DER ECDSA signature over `data` with SHA-256.
  std::string sign(const std::string& data) const {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    std::size_t size = 0;
    EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get());
    EVP_DigestSign(ctx.get(), nullptr, &size, reinterpret_cast<const unsigned char*>(data.data()), data.size());
    std::string sig(size, '\0');
    EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &size,
                   reinterpret_cast<const unsigned char*>(data.data()), data.size());
    sig.resize(size);
    return mailrelay::base64_encode(sig);
  }

 private:
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key_;
};

}  // namespace fakes
