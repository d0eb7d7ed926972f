#include "vmm/viommu.h"

#include <poll.h>
#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "base/log.h"
#include "vfio/device.h"
#include "vfio/uapi_compat.h"

namespace conduit::vmm {

namespace smmu = vfio::smmuv3;
using devices::smmuv3::Command;
using devices::smmuv3::Event;
using devices::smmuv3::Ste;

namespace {

constexpr uint32_t kIdr0Cohacc = 1u << 4;  // SMMU_IDR0.COHACC: coherent table walks

const char* configName(smmu::SteCfg c) {
    switch (c) {
        case smmu::kCfgAbort: return "abort";
        case smmu::kCfgBypass: return "bypass";
        case smmu::kCfgS1Trans: return "S1";
        case smmu::kCfgS2Trans: return "S2";
        case smmu::kCfgNested: return "nested";
    }
    return "reserved";
}

}  // namespace

// One physical SMMU: its vIOMMU and what hangs off it.
struct NestedSmmuBinding::Unit {
    unsigned index = 0;
    vfio::VfioDevice* first = nullptr;  // the device the unit was created with
    std::shared_ptr<vfio::NestParentHwpt> parent;
    std::shared_ptr<vfio::Viommu> viommu;
    std::shared_ptr<vfio::NestedHwpt> abort, bypass;
    std::unique_ptr<vfio::VeventQueue> events;
};

// One assigned device and the HWPT it is attached to.
struct NestedSmmuBinding::Stream {
    vfio::VfioDevice* device = nullptr;
    uint32_t sid = 0;
    Unit* unit = nullptr;
    bool onParent = false;  // attached to a HWPT of ours (else still on the IOAS)
    std::shared_ptr<vfio::Vdevice> vdevice;
    std::shared_ptr<const vfio::Hwpt> attached;  // the unit's abort/bypass, or `s1`
    std::shared_ptr<vfio::NestedHwpt> s1;        // an S1 HWPT of this stream's own
    Ste ste{};                                   // what `attached` carries
};

Result<std::unique_ptr<NestedSmmuBinding>> NestedSmmuBinding::create(vfio::IommuNesting& nesting,
                                                                     std::vector<Device> devices) {
    if (devices.empty()) return Error("vSMMU: no device to front (a vfio-pci device with \"viommu\": true)", EINVAL);
    std::unique_ptr<NestedSmmuBinding> b(new NestedSmmuBinding(nesting));
    TRY(b->build(std::move(devices)));
    return b;
}

Result<NestedSmmuBinding::Unit*> NestedSmmuBinding::unitFor(vfio::VfioDevice& dev, uint32_t sid,
                                                            std::shared_ptr<vfio::Vdevice>* vdevice) {
    // An existing unit if its vIOMMU takes the device: IOMMU_VDEVICE_ALLOC is EINVAL for a device
    // behind another SMMU instance (the stage-2 domain may be shared across instances, so the
    // attach alone does not tell).
    for (auto& u : units_) {
        // A driver that does not share stage-2 domains across instances refuses the attach itself.
        if (auto a = nesting_.attach(dev, u->parent); !a) {
            if (a.error().code() == EINVAL) continue;
            return std::move(a).error().withContext(fmt::format("vSMMU: attaching {} to the NEST_PARENT HWPT", dev.name()));
        }
        auto v = nesting_.allocVdevice(dev, u->viommu, sid);
        if (v) {
            *vdevice = *v;
            return u.get();
        }
        if (v.error().code() != EINVAL)
            return std::move(v).error().withContext(fmt::format("vSMMU: vDEVICE of {} (StreamID {:#x})", dev.name(), sid));
    }
    // A new physical SMMU.
    auto u = std::make_unique<Unit>();
    u->index = static_cast<unsigned>(units_.size());
    u->first = &dev;
    const std::string what = fmt::format("vSMMU: host SMMU of {}", dev.name());
    auto hw = TRY_CTX(nesting_.hwInfo(dev), what);
    if (hw.dataType != IOMMU_HW_INFO_TYPE_ARM_SMMUV3 || !hw.smmuv3)
        return Error(fmt::format("{}: the host IOMMU is no Arm SMMUv3 (IOMMU_GET_HW_INFO type {}); the vSMMU "
                                 "nests only on an SMMUv3",
                                 what, hw.dataType),
                     EOPNOTSUPP);
    if (units_.empty()) {
        hwInfo_ = hw;
        hostIds_.idr = hw.smmuv3->idr;
        hostIds_.iidr = hw.smmuv3->iidr;
        hostIds_.aidr = hw.smmuv3->aidr;
        hostIds_.maxPasidLog2 = hw.maxPasidLog2;
    } else if (hw.smmuv3->idr != hwInfo_.smmuv3->idr) {
        return Error(fmt::format("{}: its ID registers differ from those of the first host SMMU, and the guest "
                                 "sees one SMMU: assign devices of identical SMMUs only",
                                 what),
                     EINVAL);
    }
    if (!(hw.smmuv3->idr[0] & smmu::kIdr0S2p) || !(hw.smmuv3->idr[0] & smmu::kIdr0S1p))
        return Error(fmt::format("{}: IDR0 {:#x} lacks stage 1 or stage 2; nesting needs both", what, hw.smmuv3->idr[0]),
                     EOPNOTSUPP);
    u->parent = TRY_CTX(nesting_.allocNestParent(dev), what + ": the stage-2 (NEST_PARENT) HWPT");
    auto attached = nesting_.attach(dev, u->parent);
    if (!attached) return std::move(attached).error().withContext(what + ": attaching to the NEST_PARENT HWPT");
    units_.push_back(std::move(u));
    Unit* unit = units_.back().get();
    auto viommu = nesting_.allocViommu(dev, unit->parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3);
    if (!viommu) {
        if (viommu.error().code() == EOPNOTSUPP)
            return std::move(viommu).error().withContext(
                what + ": the host refuses a vIOMMU: its SMMU has neither CANWBS (ACPI IORT root-complex "
                       "memory access flags) nor S2FWB (IDR3.FWB), which nesting requires; a host booted "
                       "with a device tree has no CANWBS");
        return std::move(viommu).error().withContext(what + ": the vIOMMU");
    }
    unit->viommu = *viommu;
    // The shared abort (V, Config=abort) and bypass (V, Config=bypass) STEs.
    const Ste abortSte{smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgAbort), 0};
    const Ste bypassSte{smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgBypass), 0};
    unit->abort = TRY_CTX(nesting_.allocNestedHwpt(dev, unit->viommu, abortSte), what + ": the abort HWPT");
    unit->bypass = TRY_CTX(nesting_.allocNestedHwpt(dev, unit->viommu, bypassSte), what + ": the bypass HWPT");
    unit->events = TRY_CTX(nesting_.allocVeventQueue(unit->viommu, kEventQueueDepth), what + ": the vEVENTQ");
    *vdevice = TRY_CTX(nesting_.allocVdevice(dev, unit->viommu, sid),
                       fmt::format("vSMMU: vDEVICE of {} (StreamID {:#x})", dev.name(), sid));
    log::get("vmm").info("vSMMU: host SMMU {} (IDR0 {:#x} IDR1 {:#x} IDR3 {:#x} IDR5 {:#x}, max PASID bits {}): "
                         "vIOMMU {}, stage 2 HWPT {}, vEVENTQ {}",
                         unit->index, hw.smmuv3->idr[0], hw.smmuv3->idr[1], hw.smmuv3->idr[3], hw.smmuv3->idr[5],
                         hw.maxPasidLog2, unit->viommu->id(), unit->parent->id(), unit->events->id());
    return unit;
}

Result<void> NestedSmmuBinding::build(std::vector<Device> devices) {
    for (auto& d : devices) {
        if (!d.device) return Error("vSMMU: a null device", EINVAL);
        for (auto& s : streams_)
            if (s->sid == d.streamId)
                return Error(fmt::format("vSMMU: StreamID {:#x} given to both {} and {}", d.streamId, s->device->name(),
                                         d.device->name()),
                             EINVAL);
        auto st = std::make_unique<Stream>();
        st->device = d.device;
        st->sid = d.streamId;
        streams_.push_back(std::move(st));
        Stream& s = *streams_.back();
        // unitFor() attaches the device to the unit's stage 2 (replacing the IOAS); from here on
        // teardown puts it back on the IOAS, whether or not the rest succeeds.
        s.onParent = true;
        s.unit = TRY(unitFor(*d.device, d.streamId, &s.vdevice));
        s.attached = s.unit->parent;
        if (d.device != s.unit->first) {
            auto hw = TRY_CTX(nesting_.hwInfo(*d.device), fmt::format("vSMMU: {}", d.device->name()));
            hostIds_.maxPasidLog2 = std::min(hostIds_.maxPasidLog2, hw.maxPasidLog2);
        }
        log::get("vmm").info("vSMMU: {} is StreamID {:#x} on host SMMU {} (vDEVICE {})", d.device->name(), d.streamId,
                             s.unit->index, s.vdevice->id());
    }
    stats_.vdevices = streams_.size();
    stats_.viommus = units_.size();
    return success();
}

bool NestedSmmuBinding::coherent() const { return hwInfo_.smmuv3 && (hwInfo_.smmuv3->idr[0] & kIdr0Cohacc); }

std::vector<uint32_t> NestedSmmuBinding::streams() const {
    std::vector<uint32_t> v;
    for (auto& s : streams_) v.push_back(s->sid);
    return v;
}

NestedSmmuBinding::Stream* NestedSmmuBinding::find(uint32_t sid) {
    for (auto& s : streams_)
        if (s->sid == sid) return s.get();
    return nullptr;
}

Result<void> NestedSmmuBinding::setStream(uint32_t sid, const Ste& ste) {
    std::lock_guard lock(mutex_);
    Stream* s = find(sid);
    if (!s) {
        ++stats_.steErrors;
        return Error(fmt::format("vSMMU: StreamID {:#x} belongs to no assigned device", sid), ENOENT);
    }
    if ((ste[0] & ~smmu::kSte0NestingAllowed) || (ste[1] & ~smmu::kSte1NestingAllowed)) {
        // The vSMMU sanitises; anything else reaching here is a bug to see, not to mask.
        ++stats_.steErrors;
        return Error(fmt::format("vSMMU: STE {:#018x} {:#018x} for StreamID {:#x} has bits the host does not take "
                                 "for nesting ({:#x} {:#x})",
                                 ste[0], ste[1], sid, ste[0] & ~smmu::kSte0NestingAllowed,
                                 ste[1] & ~smmu::kSte1NestingAllowed),
                     EINVAL);
    }
    const smmu::SteCfg cfg = smmu::steConfig(ste);
    std::shared_ptr<const vfio::Hwpt> target;
    std::shared_ptr<vfio::NestedHwpt> s1;
    switch (cfg) {
        case smmu::kCfgAbort:
            if (s->attached == s->unit->abort) {
                ++stats_.steUnchanged;
                return success();
            }
            target = s->unit->abort;
            break;
        case smmu::kCfgBypass:
            if (s->attached == s->unit->bypass) {
                ++stats_.steUnchanged;
                return success();
            }
            target = s->unit->bypass;
            break;
        case smmu::kCfgS1Trans: {
            if (s->s1 && s->attached == s->s1 && s->ste == ste) {
                ++stats_.steUnchanged;
                return success();
            }
            auto h = nesting_.allocNestedHwpt(*s->device, s->unit->viommu, ste);
            if (!h) {
                ++stats_.steErrors;
                return std::move(h).error().withContext(fmt::format("vSMMU: StreamID {:#x} S1 STE", sid));
            }
            s1 = *h;
            target = s1;
            break;
        }
        default:
            ++stats_.steErrors;
            return Error(fmt::format("vSMMU: StreamID {:#x}: STE config {} ({}) cannot be nested (abort, bypass and "
                                     "S1 only)",
                                     sid, static_cast<unsigned>(cfg), configName(cfg)),
                         EINVAL);
    }
    // Replacement: the device goes from the old HWPT to the new one in one step.
    if (auto r = nesting_.attach(*s->device, target); !r) {
        ++stats_.steErrors;
        return std::move(r).error().withContext(fmt::format("vSMMU: StreamID {:#x} to {}", sid, configName(cfg)));
    }
    s->attached = target;
    s->ste = cfg == smmu::kCfgS1Trans ? ste : Ste{};
    s->s1 = std::move(s1);  // the previous S1 HWPT, if any, is destroyed here (no longer attached)
    switch (cfg) {
        case smmu::kCfgAbort: ++stats_.steAbort; break;
        case smmu::kCfgBypass: ++stats_.steBypass; break;
        default: ++stats_.steS1; break;
    }
    log::get("vmm").debug("vSMMU: StreamID {:#x} -> {} (HWPT {})", sid, configName(cfg), target->id());
    return success();
}

Result<void> NestedSmmuBinding::invalidate(std::span<const Command> commands, uint32_t* done) {
    std::lock_guard lock(mutex_);
    // Per unit: the commands for it and, for each, its index in the guest's batch.
    struct Batch {
        std::vector<Command> commands;
        std::vector<uint32_t> index;
    };
    std::vector<Batch> batches(units_.size());
    for (uint32_t i = 0; i < commands.size(); ++i) {
        const Command& c = commands[i];
        const uint8_t op = smmu::opcode(c);
        if (!smmu::forwardedOpcode(op)) {
            if (done) *done = i;
            return Error(fmt::format("vSMMU: command {} ({}, {:#018x} {:#018x}) is no invalidation the host takes",
                                     i, smmu::opcodeName(op), c[0], c[1]),
                         EINVAL);
        }
        if (smmu::carriesStreamId(op)) {
            Stream* s = find(static_cast<uint32_t>(smmu::field(c[0], smmu::kCfgi0Sid)));
            if (!s) {  // an emulated device's stream: nothing on the host caches it
                ++stats_.commandsDropped;
                continue;
            }
            batches[s->unit->index].commands.push_back(c);
            batches[s->unit->index].index.push_back(i);
        } else {
            for (auto& b : batches) {
                b.commands.push_back(c);
                b.index.push_back(i);
            }
        }
    }
    uint32_t firstFailed = static_cast<uint32_t>(commands.size());
    std::optional<Error> failure;
    for (size_t u = 0; u < batches.size(); ++u) {
        auto& b = batches[u];
        if (b.commands.empty()) continue;
        uint32_t unitDone = 0;
        ++stats_.invalidateCalls;
        auto r = nesting_.invalidate(*units_[u]->viommu, b.commands, &unitDone);
        stats_.commandsForwarded += std::min<size_t>(unitDone, b.commands.size());
        if (!r) {
            ++stats_.invalidateErrors;
            const uint32_t at = unitDone < b.index.size() ? b.index[unitDone] : static_cast<uint32_t>(commands.size());
            if (at < firstFailed || !failure) {
                firstFailed = std::min(firstFailed, at);
                failure = std::move(r).error().withContext(
                    fmt::format("vSMMU: invalidation batch command {} on host SMMU {}", at, u));
            }
        }
    }
    if (done) *done = firstFailed;
    if (failure) return std::move(*failure);
    return success();
}

Result<void> NestedSmmuBinding::startEvents(EventSink sink) {
    if (events_.joinable()) return Error("vSMMU: the event thread is already running", EBUSY);
    stop_ = TRY_CTX(EventFd::create(), "vSMMU: the event thread's stop eventfd");
    sink_ = std::move(sink);
    try {
        events_ = std::thread([this] { eventLoop(); });
    } catch (const std::system_error& e) {
        return Error("vSMMU: creating the event thread", e.code().value());
    }
    return success();
}

void NestedSmmuBinding::stopEvents() {
    if (!events_.joinable()) return;
    (void)stop_->signal();
    events_.join();
}

void NestedSmmuBinding::eventLoop() {
    pthread_setname_np(pthread_self(), "vsmmu-events");
    auto& log = log::get("vmm");
    std::vector<pollfd> fds{{stop_->fd(), POLLIN, 0}};
    for (auto& u : units_) fds.push_back({u->events->fd(), POLLIN, 0});
    for (;;) {
        for (auto& p : fds) p.revents = 0;
        int r = ::poll(fds.data(), fds.size(), -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            log.error("vSMMU: event thread: poll: {}; guest faults are no longer reported", strerror(errno));
            return;
        }
        if (fds[0].revents) return;
        for (size_t i = 1; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
                log.error("vSMMU: vEVENTQ fd {} reports {:#x}; no longer polled", fds[i].fd, fds[i].revents);
                fds[i].fd = -1;  // poll() ignores negative fds
                continue;
            }
            auto batch = units_[i - 1]->events->read();
            if (!batch) {
                log.warn("vSMMU: {}", batch.error().describe());
                std::lock_guard lock(mutex_);
                ++stats_.eventReadErrors;
                continue;
            }
            std::vector<Event> records;
            for (auto& e : batch->events) records.push_back(e.record);
            {
                std::lock_guard lock(mutex_);
                stats_.eventsDelivered += records.size();
                stats_.eventsLost += batch->lost;
            }
            for (auto& e : batch->events)
                log.debug("vSMMU: event {} ({:#x}) StreamID {:#x} addr {:#x}", smmu::eventName(e.eventId()),
                          e.eventId(), e.streamId(), e.record[2]);
            if (sink_ && (!records.empty() || batch->lost)) sink_(records, batch->lost);
        }
    }
}

void NestedSmmuBinding::teardown() {
    stopEvents();
    auto& log = log::get("vmm");
    // Devices back on the IOAS (the state Passthrough opened them in) before any HWPT goes.
    for (auto& s : streams_) {
        if (!s->onParent) continue;
        if (auto r = nesting_.attachIoas(*s->device); !r) {
            // Blocked is safe too: no HWPT of ours stays referenced.
            log.warn("vSMMU: {}; detaching {} instead", r.error().describe(), s->device->name());
            if (auto d = nesting_.detach(*s->device); !d) log.warn("vSMMU: {}", d.error().describe());
        }
        s->onParent = false;
        s->attached.reset();
        s->s1.reset();
    }
    // Children before parents: vDEVICEs, then per unit the HWPTs, the vEVENTQ, the vIOMMU, stage 2.
    for (auto& s : streams_) s->vdevice.reset();
    for (auto& u : units_) {
        u->abort.reset();
        u->bypass.reset();
        u->events.reset();
        u->viommu.reset();
        u->parent.reset();
    }
    streams_.clear();
    units_.clear();
}

NestedSmmuBinding::NestedSmmuBinding(vfio::IommuNesting& nesting) : nesting_(nesting) {}
NestedSmmuBinding::~NestedSmmuBinding() { teardown(); }

ViommuStats NestedSmmuBinding::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

nlohmann::json NestedSmmuBinding::statsJson() const {
    const ViommuStats s = stats();
    nlohmann::json j;
    j["type"] = "smmuv3";
    j["viommus"] = s.viommus;
    j["vdevices"] = s.vdevices;
    j["ste_changes"] = {{"abort", s.steAbort}, {"bypass", s.steBypass}, {"s1", s.steS1}};
    j["ste_unchanged"] = s.steUnchanged;
    j["ste_errors"] = s.steErrors;
    j["invalidation_commands_forwarded"] = s.commandsForwarded;
    j["invalidation_commands_dropped"] = s.commandsDropped;
    j["hwpt_invalidate_ioctls"] = s.invalidateCalls;
    j["hwpt_invalidate_errors"] = s.invalidateErrors;
    j["events_delivered"] = s.eventsDelivered;
    j["events_lost"] = s.eventsLost;
    j["event_read_errors"] = s.eventReadErrors;
    auto& streams = j["streams"] = nlohmann::json::array();
    {
        std::lock_guard lock(mutex_);
        for (auto& st : streams_) {
            nlohmann::json x;
            x["stream_id"] = st->sid;
            x["device"] = st->device->name();
            x["config"] = st->attached == st->unit->abort    ? "abort"
                          : st->attached == st->unit->bypass ? "bypass"
                          : st->s1                           ? "s1"
                                                             : "stage2";
            streams.push_back(std::move(x));
        }
    }
    return j;
}

}  // namespace conduit::vmm
