#include "relay.h"

#include "text_helpers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "provider_control.h"

namespace mailrelay {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

const Attempt* RelayResult::accepted() const {
  for (const auto& a : attempts) {
    if (a.result.outcome == AttemptOutcome::kSent) return &a;
  }
  return nullptr;
}

nlohmann::ordered_json redacted_attempts(nlohmann::ordered_json attempts) {
  for (auto& a : attempts) {
    if (a.contains("error")) a["error"] = redact_addresses(a["error"].get<std::string>());
  }
  return attempts;
}

nlohmann::ordered_json attempts_to_json(const RelayResult& result) {
  nlohmann::ordered_json attempts = nlohmann::ordered_json::array();
  for (const auto& a : result.attempts) {
    nlohmann::ordered_json item{{"provider", a.provider},
                        {"try", a.try_number},
                        {"outcome", std::string(to_string(a.result.outcome))},
                        {"latency_ms", std::round(a.latency_ms * 10) / 10}};
    if (a.result.http_status) item["http_status"] = a.result.http_status;
    if (!a.result.error.empty()) item["error"] = a.result.error;
    if (a.result.may_have_been_sent) item["may_have_been_sent"] = true;
    attempts.push_back(std::move(item));
  }
  return attempts;
}

std::string_view stop_reason_label(const RelayResult& result) {
  switch (result.reason) {
    case StopReason::kAccepted: return "accepted";
    case StopReason::kDeadline: return "deadline";
    case StopReason::kAmbiguousTimeout: return "ambiguous_timeout";
    case StopReason::kNoProviderAvailable: return "no_provider_available";
    case StopReason::kAuditUnavailable: return "audit_unavailable";
    case StopReason::kAllProvidersFailed: break;
  }
  bool all_rejected = !result.attempts.empty();
  for (const auto& a : result.attempts) all_rejected = all_rejected && a.result.outcome == AttemptOutcome::kRejected;
  return all_rejected ? "rejected_by_all" : "no_provider_left";
}

Relay::Relay(std::vector<EmailProvider*> providers, RelaySettings settings, Clock& clock,
             ProviderHealth* health, std::vector<AttemptObserver*> observers, Jitter jitter, RetryBudget* budget)
    : providers_(std::move(providers)), settings_(settings), clock_(clock), health_(health), budget_(budget),
      observers_(std::move(observers)),
      jitter_(std::move(jitter)) {
  if (!jitter_) {
    jitter_ = [] {
      thread_local std::mt19937_64 engine{std::random_device{}()};
      return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
    };
  }
}

std::string_view to_string(Strategy strategy) {
  switch (strategy) {
    case Strategy::kRoundRobin: return "round-robin";
    case Strategy::kWeighted: return "weighted";
    case Strategy::kAdaptive: return "adaptive";
    case Strategy::kFailover: break;
  }
  return "failover";
}

namespace {

// What a provider call uploads, roughly: the size class's measure.
std::size_t message_bytes(const Email& email) {
  std::size_t bytes = email.text.size() + email.html.size();
  for (const Attachment& a : email.attachments) bytes += a.content.size();
  return bytes;
}

}  // namespace

std::vector<EmailProvider*> Relay::order(const ProviderOverrides* overrides, std::size_t size_class) {
  if (overrides && !overrides->order.empty()) {
    std::vector<std::string> names;
    for (auto* p : providers_) names.push_back(p->name());
    std::vector<EmailProvider*> out;
    for (const auto& name : effective_order(names, *overrides)) {
      out.push_back(providers_[static_cast<std::size_t>(std::find(names.begin(), names.end(), name) - names.begin())]);
    }
    return out;
  }
  std::size_t first = 0;
  if (settings_.strategy == Strategy::kRoundRobin) {
    first = static_cast<std::size_t>(turn_++ % providers_.size());
  } else if (settings_.strategy == Strategy::kWeighted) {
    double total = 0;
    for (double w : settings_.weights) total += w;
    double point = jitter_() * total;
    for (std::size_t i = 0; i < settings_.weights.size(); ++i) {
      if (point < settings_.weights[i]) {
        first = i;
        break;
      }
      point -= settings_.weights[i];
    }
  } else if (settings_.strategy == Strategy::kAdaptive) {
    first = adaptive_first(size_class);
  }
  std::vector<EmailProvider*> out{providers_[first]};
  for (std::size_t i = 0; i < providers_.size(); ++i) {
    if (i != first) out.push_back(providers_[i]);
  }
  return out;
}

std::vector<std::string> Relay::current_order(const ProviderOverrides& overrides) {
  std::vector<std::string> names;
  for (auto* p : providers_) names.push_back(p->name());
  if (!overrides.order.empty() || settings_.strategy != Strategy::kAdaptive) return effective_order(names, overrides);
  const std::size_t first = adaptive_best(0);
  std::rotate(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(first), names.begin() + static_cast<std::ptrdiff_t>(first) + 1);
  return names;
}

// The lowest score among the providers that may be called now, an earlier one kept unless a later
// one beats it by the margin.
std::size_t Relay::adaptive_best(std::size_t size_class) {
  if (!health_) return 0;
  std::size_t best = 0;
  double best_score = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < providers_.size(); ++i) {
    const std::string& name = providers_[i]->name();
    const CircuitState state = health_->state(name);
    if (state == CircuitState::kOpen || state == CircuitState::kParked) continue;
    const ProviderFigures f = health_->figures(name, size_class);
    const double score = f.latency_ms + f.error_rate * static_cast<double>(settings_.attempt_timeout.count());
    const double margin = std::isinf(best_score) ? 0 : std::max(kAdaptiveMarginMs, kAdaptiveMargin * best_score);
    if (score + margin < best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

// The best, or on a probe's turn the other callable provider measured longest ago.
std::size_t Relay::adaptive_first(std::size_t size_class) {
  const std::size_t best = adaptive_best(size_class);
  if (!health_ || providers_.size() < 2) return best;
  const Clock::TimePoint now = clock_.now();
  {
    std::lock_guard<std::mutex> lock(probe_mutex_);
    ProbeTurn& turn = probes_[size_class];
    if (++turn.sends < kProbeEvery || now - turn.last < kProbeGap) return best;
  }
  std::size_t probe = best;
  Clock::TimePoint oldest = Clock::TimePoint::max();
  for (std::size_t i = 0; i < providers_.size(); ++i) {
    const std::string& name = providers_[i]->name();
    const CircuitState state = health_->state(name);
    if (i == best || state == CircuitState::kOpen || state == CircuitState::kParked) continue;
    const Clock::TimePoint last = health_->figures(name, size_class).last_call;
    if (last < oldest) {
      oldest = last;
      probe = i;
    }
  }
  if (probe != best) {
    std::lock_guard<std::mutex> lock(probe_mutex_);
    probes_[size_class] = ProbeTurn{0, now};
  }
  return probe;
}

RelayResult Relay::send(const Email& email, const std::string& request_id, Clock::TimePoint started,
                        const ProviderOverrides* overrides) {
  RelayResult out;
  if (budget_) budget_->on_request();
  const auto deadline = started + settings_.deadline;
  auto time_left = [&] { return duration_cast<milliseconds>(deadline - clock_.now()); };

  const std::size_t size_class = mailrelay::size_class(message_bytes(email));
  for (EmailProvider* provider : order(overrides, size_class)) {
    for (int try_number = 1;; ++try_number) {
      milliseconds left = time_left();
      if (left.count() <= 0) {
        out.reason = StopReason::kDeadline;
        return out;
      }
      ProviderHealth::Admission admission;
      if (auto why = skip_reason(*provider, email, overrides, admission)) {
        Attempt skipped{provider->name(), try_number, {}, 0};
        skipped.result.outcome = AttemptOutcome::kSkipped;
        skipped.result.error = *why;
        for (auto* o : observers_) o->after_attempt(request_id, skipped);
        out.attempts.push_back(skipped);
        break;
      }
      // Recorded before the call: after a crash, this line is how an operator finds a mail whose
      // outcome is unknown. Nothing goes to a provider that is not on record (README "Reading the
      // audit log").
      if (!recorded(request_id, provider->name(), try_number)) {
        if (health_) health_->release(provider->name(), admission);
        out.reason = StopReason::kAuditUnavailable;
        return out;
      }
      auto begin = clock_.now();
      Attempt attempt{provider->name(), try_number,
                      provider->send(email, request_id, std::min(settings_.attempt_timeout, left)), 0};
      attempt.latency_ms = to_ms(clock_.now() - begin);
      if (health_) {
        health_->record(provider->name(), admission, attempt.result);
        // A sandbox send is not a measure of the provider's real path (SPEC §22).
        const AttemptOutcome o = attempt.result.outcome;
        if (!email.sandbox) {
          health_->observe(provider->name(), size_class, attempt.latency_ms,
                           o == AttemptOutcome::kError || o == AttemptOutcome::kTimeout);
        }
      }
      for (auto* o : observers_) o->after_attempt(request_id, attempt);
      out.attempts.push_back(attempt);

      Decision d = settings_.policy.after_attempt(attempt.result, try_number, time_left(), jitter_());
      if (d.step == NextStep::kStop) {
        out.reason = d.reason;
        return out;
      }
      // A retry on the same provider spends from the budget shared by all requests; without
      // budget left the next provider is tried instead (an outage must not double the load).
      if (d.step == NextStep::kRetrySameProvider && budget_ && !budget_->try_spend()) break;
      if (d.step == NextStep::kNextProvider) break;
      clock_.sleep_for(d.delay);
    }
  }
  // Out of providers. If the last one failed because the deadline cut its attempt short, the
  // deadline is the honest reason; if none could even be tried, say so.
  bool all_skipped = std::all_of(out.attempts.begin(), out.attempts.end(),
                                 [](const Attempt& a) { return a.result.outcome == AttemptOutcome::kSkipped; });
  if (all_skipped) out.reason = StopReason::kNoProviderAvailable;
  else out.reason = time_left().count() <= 0 ? StopReason::kDeadline : StopReason::kAllProvidersFailed;
  return out;
}

bool Relay::recorded(const std::string& request_id, const std::string& provider, int try_number) {
  bool all = true;
  for (auto* o : observers_) all = o->before_attempt(request_id, provider, try_number) && all;
  return all;
}

// A provider whose circuit is open or that asked us to wait is skipped without a call, and so is
// one switched off by an operator or without a test mode for a sandbox message (README
// "Providers"); the skip is an attempt of its own, so the answer says why that provider was not
// used. nullopt: call it (`admission` then holds the circuit's permission).
std::optional<std::string> Relay::skip_reason(EmailProvider& provider, const Email& email,
                                              const ProviderOverrides* overrides, ProviderHealth::Admission& admission) {
  if (overrides && !overrides->enabled(provider.name())) {
    return "switched off by an operator: " + overrides->providers.at(provider.name()).reason;
  }
  if (email.sandbox && !provider.supports_sandbox()) return std::string("no test mode for a sandbox message");
  if (health_ && !(admission = health_->admit(provider.name()))) return admission.reason;
  return std::nullopt;
}

}  // namespace mailrelay
