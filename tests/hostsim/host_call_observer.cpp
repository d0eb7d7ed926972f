#include "tests/hostsim/host_call_observer.h"

#include <atomic>

namespace conduit::hostsim {

namespace {
std::atomic<HostCallObserver*> g_observer{nullptr};
thread_local unsigned t_depth = 0;
}  // namespace

void setHostCallObserver(HostCallObserver* observer) { g_observer.store(observer); }
HostCallObserver* hostCallObserver() { return g_observer.load(); }

bool insideSimulatedHost() { return t_depth > 0; }

SimulatedHostScope::SimulatedHostScope() { ++t_depth; }
SimulatedHostScope::~SimulatedHostScope() { --t_depth; }

}  // namespace conduit::hostsim
