#include "provider_registry.h"

namespace mailrelay {

// Each provider's file defines its descriptor. A new provider is two lines here (README "Adding a
// provider").
const ProviderDescriptor& sendgrid_descriptor();
const ProviderDescriptor& mailgun_descriptor();
const ProviderDescriptor& postmark_descriptor();
const ProviderDescriptor& elasticemail_descriptor();
const ProviderDescriptor& ses_descriptor();
const ProviderDescriptor& outbox_descriptor();

const std::vector<const ProviderDescriptor*>& provider_registry() {
  static const std::vector<const ProviderDescriptor*> kProviders = {
      &sendgrid_descriptor(),
      &mailgun_descriptor(),
      &postmark_descriptor(),
      &elasticemail_descriptor(),
      &ses_descriptor(),
      &outbox_descriptor(),
  };
  return kProviders;
}

const ProviderDescriptor* find_provider(std::string_view name) {
  for (const auto* p : provider_registry()) {
    if (p->name == name) return p;
  }
  return nullptr;
}

std::string provider_names() {
  std::string out;
  for (const auto* p : provider_registry()) out += (out.empty() ? "" : ", ") + p->name;
  return out;
}

}  // namespace mailrelay
