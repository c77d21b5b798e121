// Result<T, E>: a value or an error, for failures on the request path (no exceptions there).
// A plain value type; thread-compatible.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace mailrelay {

// An error a caller can act on: a stable machine code, a human message, and the request field to
// blame when there is one (e.g. "to[1].email").
struct Error {
  std::string code;
  std::string message;
  std::string field;
};

template <class T, class E = Error>
class Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(E error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit on purpose

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok()
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  // REQUIRES: !ok()
  const E& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, E> v_;
};

}  // namespace mailrelay
