#include "vmm/machine.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include <fmt/format.h>

#include "base/log.h"
#include "devices/uart16550.h"

namespace conduit::vmm {

namespace {

// SIGINT/SIGTERM while run() is active: the handler only writes the eventfd (async-signal-safe);
// run() does the stopping on its own thread.
std::atomic<int> g_signalEventFd{-1};
std::atomic<int> g_lastSignal{0};

void onStopSignal(int sig) {
    g_lastSignal.store(sig);
    int fd = g_signalEventFd.load();
    if (fd >= 0) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
    }
}

// Installs the stop handlers for the lifetime of the object and restores the previous ones.
class StopSignals {
public:
    explicit StopSignals(int eventFd) {
        g_lastSignal.store(0);
        g_signalEventFd.store(eventFd);
        struct sigaction sa {};
        sa.sa_handler = onStopSignal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigaction(SIGINT, &sa, &oldInt_);
        sigaction(SIGTERM, &sa, &oldTerm_);
    }
    ~StopSignals() {
        sigaction(SIGINT, &oldInt_, nullptr);
        sigaction(SIGTERM, &oldTerm_, nullptr);
        g_signalEventFd.store(-1);
    }

private:
    struct sigaction oldInt_ {};
    struct sigaction oldTerm_ {};
};

Result<UniqueFd> openSerialOutput(const SerialConfig& serial) {
    switch (serial.output) {
        case SerialOutput::Stdout: {
            int fd = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
            if (fd < 0) return Error::fromErrno("serial output: dup of stdout");
            return UniqueFd(fd);
        }
        case SerialOutput::File: {
            int fd = ::open(serial.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) return Error::fromErrno("serial output: open " + serial.path.string());
            return UniqueFd(fd);
        }
        case SerialOutput::None:
            break;
    }
    return UniqueFd();
}

}  // namespace

Machine::Machine(const VmConfig& config, std::unique_ptr<arch::Platform> platform, memory::AddressLayout layout,
                 EventFd wake, VfioHostFactory hosts)
    : config_(config),
      hosts_(std::move(hosts)),
      platform_(std::move(platform)),
      layout_(std::move(layout)),
      wake_(std::move(wake)) {}

Result<std::unique_ptr<Machine>> Machine::create(const VmConfig& config, VfioHostFactory hosts) {
    if (config.vcpus == 0 || config.vcpus > kMaxVcpus)
        return Error(fmt::format("machine: {} vCPUs requested (1..{})", config.vcpus, kMaxVcpus));
    if (!config.kernel == !config.payload) return Error("machine: exactly one of kernel and payload must be set");
    auto platform = arch::hostPlatform();
    auto layout = TRY_CTX(platform->addressLayout(config.memory.sizeBytes), "machine: address layout");
    auto wake = TRY(EventFd::create());
    std::unique_ptr<Machine> m(
        new Machine(config, std::move(platform), std::move(layout), std::move(wake), std::move(hosts)));
    TRY(m->build());
    TRY(m->boot());
    return m;
}

Result<void> Machine::build() {
    auto& log = log::get("vmm");
    // KVM first: a host without it fails here, before guest RAM is allocated (and prefaulted).
    kvm_ = std::make_unique<Kvm>(TRY(Kvm::open()));
    vm_ = TRY(Vm::create(*kvm_, TRY(platform_->vmType(*kvm_))));
    log.info("platform: {}", platform_->name());
    for (auto& r : layout_.describe()) log.info("layout: {:<10} {}", r.name, r.range.toString());

    memory::GuestMemoryOptions options{config_.memory.hugePages, config_.memory.prefault};
    memory_ = std::make_unique<memory::GuestMemory>(
        TRY_CTX(memory::GuestMemory::create(layout_.ramRanges(), options), "machine: guest RAM"));
    log.info("memory: {} MiB in {} region(s){}", memory_->totalBytes() >> 20, memory_->regions().size(),
             options.prefault ? ", prefaulted" : "");

    // The platform's VM-wide objects and irqchip exist before any memslot or vCPU.
    TRY(platform_->setupVm(*kvm_, *vm_));
    TRY_CTX(memory_->addListener(vm_.get()), "machine: mapping guest RAM into KVM");
    memoryListening_ = true;

    pio_ = std::make_unique<devices::Bus>("pio");
    mmio_ = std::make_unique<devices::Bus>("mmio");

    arch::MachineEvents events{
        [this](std::string reason, bool reset) { onGuestPowerEvent(std::move(reason), reset); },
        [this](uint32_t v) { onExitDevice(v); }};
    devices_ = TRY(platform_->createDevices(
        {*vm_, *pio_, *mmio_, layout_, config_, TRY(openSerialOutput(config_.serial)), std::move(events)}));
    for (unsigned i = 0; i < config_.vcpus; ++i) {
        vcpus_.push_back(TRY(vm_->createVcpu(i)));
        TRY(platform_->initVcpu(*vcpus_.back(), config_.vcpus));
    }
    std::vector<Vcpu*> vcpus;
    for (auto& v : vcpus_) vcpus.push_back(v.get());
    TRY(platform_->finalizeIrqchip(*vm_, vcpus));
    // Passthrough after the irqchip is final: a device with INTx registers its resample irqfd at
    // setup, and arm64's KVM refuses KVM_IRQFD with EAGAIN until the vGIC is initialized.
    passthrough_ =
        TRY_CTX(Passthrough::create(config_, {*vm_, *memory_, *pio_, *mmio_, layout_, *platform_}, hosts_), "machine");
    // The virtual IOMMU over the devices Passthrough opened, before boot() describes it.
    if (config_.viommu)
        viommu_ = TRY_CTX(VirtualIommu::create(*config_.viommu, {*vm_, *memory_, *mmio_, *platform_, *passthrough_}),
                          "machine");
    log.info("vcpus: {}", vcpus_.size());
    return success();
}

Result<void> Machine::boot() {
    std::vector<Vcpu*> vcpus;
    for (auto& v : vcpus_) vcpus.push_back(v.get());
    std::optional<arch::ViommuDescription> viommu;
    if (viommu_) viommu = viommu_->description();
    bootDescription_ = TRY_CTX(platform_->boot({*memory_, layout_, config_, vcpus, viommu}), "boot");
    log::get("vmm").info("boot: {}", bootDescription_);
    return success();
}

Machine::~Machine() {
    // 1. vCPU threads and the serial reader: nothing may touch devices or memory after this.
    activeRunner_.store(nullptr);
    if (runner_) {
        runner_->requestStop();
        runner_->join();
        runner_.reset();
    }
    exitHandler_.reset();
    stopSerialInput();
    // 2. Devices off the buses (the UART's interrupt line refers to the Vm). Passthrough first:
    //    its devices hold memslots, routes and DMA mappings on the Vm and on guest RAM. The virtual
    //    IOMMU before them: its nesting objects hold the devices' attachments.
    viommu_.reset();
    passthrough_.reset();
    devices_.reset();
    pio_.reset();
    mmio_.reset();
    // 3. vCPUs, 4. memslots (through the listener), 5. the VM, 6. guest RAM.
    vcpus_.clear();
    if (memoryListening_) memory_->removeListener(vm_.get());
    vm_.reset();
    kvm_.reset();
    memory_.reset();
}

void Machine::onExitDevice(uint32_t value) {
    // On a vCPU thread, from inside the bus dispatch: record, stop everyone, wake run().
    if (!exitFired_.exchange(true)) {
        exitValue_.store(value);
        log::get("vmm").info("exit device: guest wrote {:#x}", value);
    }
    stopVcpus();
}

void Machine::onGuestPowerEvent(std::string reason, bool reset) {
    {
        std::lock_guard lock(powerEventMutex_);
        if (!powerEventFired_.load()) {
            powerEventReason_ = std::move(reason);
            powerEventIsReset_ = reset;
            powerEventFired_.store(true);
        }
    }
    stopVcpus();
}

Result<int> Machine::guestEnded(const std::string& reason, bool reset) const {
    auto& log = log::get("vmm");
    if (reset && config_.onReboot == RebootAction::Error) {
        log.error("exit: {}; on_reboot is \"error\"", reason);
        return Error(reason + " (on_reboot: error)");
    }
    if (reset) log.warn("exit: {}; on_reboot is \"exit\": the VM ends", reason);
    else log.info("exit: {}", reason);
    return 0;
}

void Machine::stopVcpus() {
    if (VcpuRunner* r = activeRunner_.load()) r->requestStop();
    (void)wake_.signal();
}

void Machine::requestStop() {
    stopRequested_.store(true);
    if (VcpuRunner* r = activeRunner_.load()) r->requestStop();
    (void)wake_.signal();
}

void Machine::startSerialInput() {
    if (config_.serial.input != SerialInput::Stdin) return;
    auto stop = EventFd::create();
    if (!stop) {
        log::get("vmm").warn("serial input disabled: {}", stop.error().describe());
        return;
    }
    serialStop_ = std::make_unique<EventFd>(std::move(stop).value());
    try {
        startSerialReader();
    } catch (const std::system_error& e) {
        // Like a missing eventfd: the guest runs on without serial input (one line says why).
        log::get("vmm").warn("{}", Error("serial input disabled: creating the serial-in thread", e.code().value()).describe());
    }
}

void Machine::startSerialReader() {
    serialIn_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "serial-in");
        auto& log = log::get("vmm");
        uint8_t buf[256];
        for (;;) {
            // Back-pressure: while the UART's buffer is full, leave the bytes in stdin.
            size_t room = std::min(sizeof buf, uart().rxFree());
            pollfd fds[2] = {{serialStop_->fd(), POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
            int r = ::poll(fds, room ? 2 : 1, room ? -1 : 10);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                log.warn("serial-in: poll: {}", strerror(errno));
                return;
            }
            if (fds[0].revents) return;
            if (!room || !fds[1].revents) continue;
            ssize_t n = ::read(STDIN_FILENO, buf, room);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n <= 0) {
                log.debug("serial-in: stdin closed");
                return;
            }
            uart().receive(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
        }
    });
}

void Machine::stopSerialInput() {
    if (serialIn_.joinable()) {
        (void)serialStop_->signal();
        serialIn_.join();
    }
}

Result<int> Machine::run() {
    auto& log = log::get("vmm");
    if (ran_.exchange(true)) return Error("machine: run() can only be called once");

    auto signalEvent = TRY(EventFd::create());
    StopSignals signals(signalEvent.fd());

    std::vector<Vcpu*> vcpus;
    for (auto& v : vcpus_) vcpus.push_back(v.get());
    exitHandler_ = platform_->exitHandler(*pio_, exitStats_);
    runner_ = std::make_unique<VcpuRunner>(std::move(vcpus), *mmio_, exitStats_, exitHandler_.get(),
                                           [this](const Vcpu&, const VcpuOutcome&) { (void)wake_.signal(); });
    activeRunner_.store(runner_.get());
    if (stopRequested_.load()) runner_->requestStop();
    startSerialInput();
    log.info("running {} vCPU(s)", vcpus_.size());
    TRY(runner_->start());

    // Decide what ended the run. Priority: the guest's own exit value, then its power-off or reset
    // through a device, then a vCPU failure, then a signal, then a stop request, then a power-off
    // or reset through a KVM system event or a triple fault.
    std::optional<Result<int>> result;
    while (!result) {
        pollfd fds[2] = {{wake_.fd(), POLLIN, 0}, {signalEvent.fd(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
            result = Error::fromErrno("machine: poll");
            break;
        }
        wake_.consume();
        bool signalled = signalEvent.consume() > 0;

        std::optional<VcpuOutcome> failed, shutdown, powerOff;
        size_t ended = 0, halted = 0;
        for (size_t i = 0; i < runner_->size(); ++i) {
            auto o = runner_->outcome(i);
            if (!o) continue;
            ++ended;
            if (o->kind == VcpuStop::Failed && !failed) failed = o;
            if (o->kind == VcpuStop::Shutdown && !shutdown) shutdown = o;
            if (o->kind == VcpuStop::PowerOff && !powerOff) powerOff = o;
            if (o->kind == VcpuStop::Halted) ++halted;
        }

        if (exitFired_.load()) {
            uint32_t v = exitValue_.load();
            log.info("exit: guest wrote {:#x} to the exit device", v);
            result = static_cast<int>(v);
        } else if (powerEventFired_.load()) {
            result = guestEnded(powerEventReason_, powerEventIsReset_);
        } else if (failed) {
            log.error("exit: {}", failed->message);
            result = Error(failed->message);
        } else if (signalled) {
            int sig = g_lastSignal.load();
            std::string name = sig ? (sigabbrev_np(sig) ? std::string("SIG") + sigabbrev_np(sig) : std::to_string(sig)) : "?";
            log.warn("exit: interrupted by signal {}", name);
            result = Error("interrupted by signal " + name, EINTR);
        } else if (stopRequested_.load()) {
            log.info("exit: stopped by request");
            result = Error("stopped by request", EINTR);
        } else if (powerOff) {
            result = guestEnded("guest powered off: " + powerOff->message, false);
        } else if (shutdown) {
            result = guestEnded("guest shut down or reset: " + shutdown->message, true);
        } else if (halted > 0 && halted == ended && ended == runner_->size()) {
            log.error("exit: every vCPU halted with nothing to wake it");
            result = Error("every vCPU halted with nothing to wake it");
        }
    }

    runner_->requestStop();
    runner_->join();
    stopSerialInput();
    log.info("exits: {}", exitStats_.toJson(pio_.get(), mmio_.get())["exits"].dump());
    return *std::move(result);
}

nlohmann::json Machine::stats() const {
    nlohmann::json j = exitStats_.toJson(pio_.get(), mmio_.get());
    j["vcpus"] = vcpus_.size();
    j["memory_bytes"] = memory_ ? memory_->totalBytes() : 0;
    j["memslots"] = vm_ ? vm_->regionSlots().size() : 0;
    if (devices_) j["uart"] = {{"bytes_transmitted", devices_->console().bytesTransmitted()}};
    if (passthrough_) j["passthrough"] = passthrough_->stats();
    if (viommu_) j["viommu"] = viommu_->stats();
    if (exitFired_.load()) j["exit_value"] = exitValue_.load();
    j["boot"] = bootDescription_;
    return j;
}

}  // namespace conduit::vmm
