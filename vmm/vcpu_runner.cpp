#include "vmm/vcpu_runner.h"

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <span>

#include <fmt/format.h>

#include "base/log.h"
#include "devices/bus.h"

namespace conduit::vmm {

namespace {

// The running thread's kvm_run, for the kick handler. initial-exec TLS is safe to touch from a
// signal handler (no lazy allocation).
__attribute__((tls_model("initial-exec"))) thread_local kvm_run* t_run = nullptr;

void onKick(int) {
    if (kvm_run* run = t_run) run->immediate_exit = 1;
}

void installKickHandler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_handler = onKick;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
        sigaction(VcpuRunner::kickSignal(), &sa, nullptr);
    });
}

const char* internalSuberrorName(uint32_t suberror) {
    switch (suberror) {
        case KVM_INTERNAL_ERROR_EMULATION:
            return "emulation failure";
        case KVM_INTERNAL_ERROR_SIMUL_EX:
            return "simultaneous exceptions";
        case KVM_INTERNAL_ERROR_DELIVERY_EV:
            return "event delivery failure";
        case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
            return "unexpected exit reason";
        default:
            return "unknown suberror";
    }
}

std::string describeInternalError(const Vcpu& vcpu, const std::string& at) {
    const kvm_run* run = vcpu.run();
    uint32_t sub = run->internal.suberror;
    std::string msg = fmt::format("{}: KVM_EXIT_INTERNAL_ERROR ({}){}", vcpu.name(), internalSuberrorName(sub), at);
    const auto& ef = run->emulation_failure;
    if (sub == KVM_INTERNAL_ERROR_EMULATION && ef.ndata >= 3 &&
        (ef.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
        size_t n = std::min<size_t>(ef.insn_size, sizeof ef.insn_bytes);
        msg += " insn bytes";
        for (size_t i = 0; i < n; ++i) msg += fmt::format(" {:02x}", ef.insn_bytes[i]);
    } else if (run->internal.ndata > 0) {
        msg += " data";
        for (uint32_t i = 0; i < run->internal.ndata && i < 16; ++i) msg += fmt::format(" {:#x}", run->internal.data[i]);
    }
    return msg;
}

}  // namespace

int VcpuRunner::kickSignal() { return SIGRTMIN; }

VcpuRunner::VcpuRunner(std::vector<Vcpu*> vcpus, devices::Bus& mmio, ExitStats& stats, VcpuExitHandler* arch,
                       OnFinish onFinish)
    : vcpus_(std::move(vcpus)),
      mmio_(mmio),
      arch_(arch),
      stats_(stats),
      onFinish_(std::move(onFinish)),
      handles_(vcpus_.size()),
      live_(new std::atomic<bool>[vcpus_.size()]),
      outcomes_(vcpus_.size()) {
    for (size_t i = 0; i < vcpus_.size(); ++i) live_[i] = false;
}

VcpuRunner::~VcpuRunner() {
    if (!started_) return;
    requestStop();
    join();
}

Result<void> VcpuRunner::start() {
    if (started_) return Error("vCPU threads already started");
    started_ = true;
    installKickHandler();
    {
        std::lock_guard lock(mutex_);
        running_ = vcpus_.size();
    }
    for (size_t i = 0; i < vcpus_.size(); ++i) {
        try {
            threads_.emplace_back([this, i] {
                Vcpu& vcpu = *vcpus_[i];
                pthread_setname_np(pthread_self(), vcpu.name().c_str());
                // The kick must reach this thread even if the creator blocked it.
                sigset_t set;
                sigemptyset(&set);
                sigaddset(&set, kickSignal());
                pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
                t_run = vcpu.run();
                handles_[i] = pthread_self();
                live_[i].store(true);
                VcpuOutcome outcome = loop(i);
                live_[i].store(false);
                t_run = nullptr;
                {
                    std::lock_guard lock(mutex_);
                    outcomes_[i] = outcome;
                    --running_;
                }
                cv_.notify_all();
                if (onFinish_) onFinish_(vcpu, outcome);
            });
        } catch (const std::system_error& e) {
            requestStop();
            {
                std::lock_guard lock(mutex_);
                running_ -= vcpus_.size() - i;
            }
            return Error(fmt::format("creating the thread of vcpu{}", i), e.code().value());
        }
    }
    return success();
}

void VcpuRunner::kick(size_t i) {
    // Only live threads: a loop that has not started yet sees the flags before its first KVM_RUN,
    // and one that has ended may belong to a vCPU that is already gone.
    if (!live_[i].load()) return;
    vcpus_[i]->run()->immediate_exit = 1;
    pthread_kill(handles_[i], kickSignal());
}

void VcpuRunner::requestStop() {
    stop_.store(true);
    for (size_t i = 0; i < vcpus_.size(); ++i) kick(i);
}

void VcpuRunner::pause() {
    pause_.store(true);
    for (size_t i = 0; i < vcpus_.size(); ++i) kick(i);
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return parked_ >= running_; });
}

void VcpuRunner::resume() {
    {
        std::lock_guard lock(mutex_);
        pause_.store(false);
    }
    cv_.notify_all();
}

void VcpuRunner::join() {
    for (auto& t : threads_)
        if (t.joinable()) t.join();
}

std::optional<VcpuOutcome> VcpuRunner::outcome(size_t index) const {
    std::lock_guard lock(mutex_);
    return outcomes_.at(index);
}

std::string VcpuRunner::at(const Vcpu& vcpu) const {
    std::string where = arch_ ? arch_->where(vcpu) : std::string();
    return where.empty() ? std::string() : " at " + where;
}

bool VcpuRunner::handleMmio(Vcpu& vcpu) {
    auto& mmio = vcpu.run()->mmio;
    const bool write = mmio.is_write;
    std::span<uint8_t> data(mmio.data, std::min<uint32_t>(mmio.len, sizeof mmio.data));
    bool claimed = write ? mmio_.write(mmio.phys_addr, data) : mmio_.read(mmio.phys_addr, data);
    stats_.countAccess(BusSpace::Mmio, mmio.phys_addr, write, claimed);
    if (!claimed) {
        if (!write) std::memset(data.data(), 0xff, data.size());
        log::get("vmm").debug("{}: unclaimed MMIO {} {:#x} size {}", vcpu.name(), write ? "write" : "read",
                              mmio.phys_addr, mmio.len);
    }
    return true;
}

VcpuOutcome VcpuRunner::loop(size_t index) {
    Vcpu& vcpu = *vcpus_[index];
    kvm_run* run = vcpu.run();
    auto& log = log::get("vmm");
    for (;;) {
        // Clear first, then look at the flags: a kick after this point either is seen below or
        // leaves immediate_exit set so that KVM_RUN returns at once.
        run->immediate_exit = 0;
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (stop_.load()) return {VcpuStop::Requested, vcpu.name() + ": stopped by request"};
        if (pause_.load()) {
            std::unique_lock lock(mutex_);
            ++parked_;
            cv_.notify_all();
            cv_.wait(lock, [&] { return !pause_.load() || stop_.load(); });
            --parked_;
            continue;
        }

        auto r = vcpu.runOnce();
        if (!r) {
            int e = r.error().code();
            if (e == EINTR) continue;  // kicked (or immediate_exit): look at the flags again
            if (e == EAGAIN) {
                // An AP's first KVM_RUN after INIT/SIPI returns EAGAIN once on this KVM.
                log.debug("{}: KVM_RUN returned EAGAIN, retrying", vcpu.name());
                continue;
            }
            return {VcpuStop::Failed, vcpu.name() + ": " + r.error().describe()};
        }

        stats_.countExit(run->exit_reason);
        switch (run->exit_reason) {
            case KVM_EXIT_MMIO:
                handleMmio(vcpu);
                break;
            case KVM_EXIT_INTR:
            case KVM_EXIT_IRQ_WINDOW_OPEN:
                break;
            case KVM_EXIT_HLT:
                return {VcpuStop::Halted, fmt::format("{}: halted (KVM_EXIT_HLT){}", vcpu.name(), at(vcpu))};
            case KVM_EXIT_SHUTDOWN:
                return {VcpuStop::Shutdown,
                        fmt::format("{}: KVM_EXIT_SHUTDOWN (triple fault or reset){}", vcpu.name(), at(vcpu))};
            case KVM_EXIT_SYSTEM_EVENT: {
                // The guest asked the platform's firmware (PSCI, ...) to power off or reset.
                uint32_t type = run->system_event.type;
                std::string call = arch_ ? arch_->systemEvent(vcpu) : std::string();
                if (!call.empty()) call = ", " + call;
                switch (type) {
                    case KVM_SYSTEM_EVENT_SHUTDOWN:
                        return {VcpuStop::PowerOff, fmt::format("{}: KVM_EXIT_SYSTEM_EVENT (shutdown{})", vcpu.name(), call)};
                    case KVM_SYSTEM_EVENT_RESET:
                        return {VcpuStop::Shutdown, fmt::format("{}: KVM_EXIT_SYSTEM_EVENT (reset{})", vcpu.name(), call)};
                    case KVM_SYSTEM_EVENT_CRASH:
                        return {VcpuStop::Failed, fmt::format("{}: KVM_EXIT_SYSTEM_EVENT (crash{})", vcpu.name(), call)};
                    default:
                        return {VcpuStop::Failed,
                                fmt::format("{}: KVM_EXIT_SYSTEM_EVENT (unknown type {}{})", vcpu.name(), type, call)};
                }
            }
            case KVM_EXIT_INTERNAL_ERROR:
                return {VcpuStop::Failed, describeInternalError(vcpu, at(vcpu))};
            case KVM_EXIT_FAIL_ENTRY:
                return {VcpuStop::Failed,
                        fmt::format("{}: KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {:#x}, cpu {}){}",
                                    vcpu.name(), run->fail_entry.hardware_entry_failure_reason, run->fail_entry.cpu,
                                    at(vcpu))};
            default:
                if (arch_ && arch_->handle(vcpu)) break;
                return {VcpuStop::Failed, fmt::format("{}: unexpected exit KVM_EXIT_{} ({}){}", vcpu.name(),
                                                      exitReasonName(run->exit_reason), run->exit_reason, at(vcpu))};
        }
    }
}

}  // namespace conduit::vmm
