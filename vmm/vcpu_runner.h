// The vCPU threads: one thread per vCPU, named "vcpu<N>", each in a KVM_RUN loop that dispatches
// MMIO to the MMIO bus, leaves the architecture's own exits (x86 port I/O) to a VcpuExitHandler
// from the platform, and ends on power-off, shutdown, failure or a stop request. Without a handler
// the loop is MMIO-only.
//
// Stopping and pausing: a flag is set, then each vCPU thread is kicked with a real-time signal
// whose handler does nothing but set kvm_run->immediate_exit. The loop clears immediate_exit,
// checks the flags, then enters KVM_RUN; a kick landing between the check and KVM_RUN leaves
// immediate_exit set so KVM_RUN returns EINTR at once, and a kick during KVM_RUN interrupts it.
// requestStop() is async-signal-safe (atomics and pthread_kill only).
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "vmm/exit_stats.h"
#include "vmm/vcpu.h"

namespace conduit::devices {
class Bus;
}

namespace conduit::vmm {

enum class VcpuStop {
    Requested,  // requestStop()
    PowerOff,   // KVM_EXIT_SYSTEM_EVENT shutdown (e.g. PSCI SYSTEM_OFF)
    Shutdown,   // KVM_EXIT_SHUTDOWN (triple fault) or KVM_EXIT_SYSTEM_EVENT reset: the guest reset
    Halted,     // KVM_EXIT_HLT (only without the in-kernel irqchip)
    Failed,     // internal error, failed entry, unexpected exit or KVM_RUN error
};

struct VcpuOutcome {
    VcpuStop kind = VcpuStop::Requested;
    std::string message;  // one line, starts with the vCPU name
};

// What the architecture adds to the generic loop (arch::Platform::exitHandler()).
class VcpuExitHandler {
public:
    virtual ~VcpuExitHandler() = default;
    // An exit reason the generic loop does not handle, on the vCPU's thread. true: handled, the
    // loop goes on; false: unexpected (the vCPU fails, naming the exit).
    virtual bool handle(Vcpu& vcpu) = 0;
    // Where the vCPU is, for messages: "rip 0x100004", "pc 0x40080000"; empty when unknown.
    virtual std::string where(const Vcpu& vcpu) const = 0;
    // The firmware call behind the KVM_EXIT_SYSTEM_EVENT in the vCPU's kvm_run, for messages
    // ("PSCI SYSTEM_OFF"); empty when the platform cannot say.
    virtual std::string systemEvent(const Vcpu&) const { return {}; }
};

class VcpuRunner {
public:
    // Called on the vCPU's thread when its loop ends, before the thread exits.
    using OnFinish = std::function<void(const Vcpu& vcpu, const VcpuOutcome& outcome)>;

    // The vCPUs, bus, stats and exit handler (may be null: MMIO only) must outlive the runner.
    VcpuRunner(std::vector<Vcpu*> vcpus, devices::Bus& mmio, ExitStats& stats, VcpuExitHandler* arch,
               OnFinish onFinish = {});
    ~VcpuRunner();  // requestStop() + join()
    VcpuRunner(const VcpuRunner&) = delete;
    VcpuRunner& operator=(const VcpuRunner&) = delete;

    // Starts every thread (once).
    Result<void> start();
    // Thread-safe and async-signal-safe; idempotent.
    void requestStop();
    bool stopRequested() const { return stop_.load(); }
    // Parks every running vCPU outside KVM_RUN and waits until all are parked (so their state can
    // be read from this thread); resume() lets them go on. Not from a signal handler.
    void pause();
    void resume();
    // Waits for every thread to end.
    void join();

    // The outcome of each vCPU's loop, once it has ended.
    std::optional<VcpuOutcome> outcome(size_t index) const;
    size_t size() const { return vcpus_.size(); }

    // The signal used for kicks (SIGRTMIN); its handler is installed by start().
    static int kickSignal();

private:
    VcpuOutcome loop(size_t index);
    bool handleMmio(Vcpu& vcpu);
    // " at rip 0x..." from the exit handler, or "" when it cannot say.
    std::string at(const Vcpu& vcpu) const;
    void kick(size_t index);

    std::vector<Vcpu*> vcpus_;
    devices::Bus& mmio_;
    VcpuExitHandler* arch_;
    ExitStats& stats_;
    OnFinish onFinish_;

    std::atomic<bool> stop_{false};
    std::atomic<bool> pause_{false};
    std::vector<std::thread> threads_;
    std::vector<pthread_t> handles_;        // filled before any thread runs; read by requestStop()
    std::unique_ptr<std::atomic<bool>[]> live_;  // thread started and not yet finished
    bool started_ = false;

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    size_t parked_ = 0;
    size_t running_ = 0;
    std::vector<std::optional<VcpuOutcome>> outcomes_;
};

}  // namespace conduit::vmm
