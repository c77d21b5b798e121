#include "suppressions.h"

#include <vector>

namespace mailrelay {

Result<std::optional<SuppressedRecipient>> Suppressions::first_suppressed(const Email& email) {
  std::vector<std::string> hashes, fields;
  for (const auto& [name, list] : {std::pair<const char*, const std::vector<Address>*>{"to", &email.to},
                                   {"cc", &email.cc}, {"bcc", &email.bcc}}) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      hashes.push_back(suppression_hash(key_, (*list)[i].email));
      fields.push_back(std::string(name) + "[" + std::to_string(i) + "]");
    }
  }
  auto found = store_.suppressions(hashes);
  if (!found) return found.error();
  for (std::size_t i = 0; i < found.value().size(); ++i) {
    if (found.value()[i]) return std::optional<SuppressedRecipient>(SuppressedRecipient{fields[i], *found.value()[i]});
  }
  return std::optional<SuppressedRecipient>();
}

Result<std::optional<Suppression>> Suppressions::find(const std::string& address) {
  auto found = store_.suppressions({suppression_hash(key_, address)});
  if (!found) return found.error();
  return found.value().empty() ? std::nullopt : found.value()[0];
}

Result<bool> Suppressions::add(const std::string& address, const Suppression& why) {
  return store_.suppress(suppression_hash(key_, address), why);
}

Result<bool> Suppressions::remove(const std::string& address) { return store_.unsuppress(suppression_hash(key_, address)); }

}  // namespace mailrelay
