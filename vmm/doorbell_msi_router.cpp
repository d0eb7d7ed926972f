#include "vmm/doorbell_msi_router.h"

namespace conduit::vmm {

namespace {

class DoorbellRoute final : public devices::pci::MsiRoute {
public:
    DoorbellRoute(const DoorbellMsiRouter& router, std::unique_ptr<devices::pci::MsiRoute> inner)
        : router_(router), inner_(std::move(inner)) {}
    int eventFd() const override { return inner_->eventFd(); }
    Result<void> setMessage(const devices::MsiMessage& message) override {
        return inner_->setMessage(router_.rewrite(message));
    }
    Result<void> setMasked(bool masked) override { return inner_->setMasked(masked); }
    bool masked() const override { return inner_->masked(); }
    bool pending() const override { return inner_->pending(); }

private:
    const DoorbellMsiRouter& router_;
    std::unique_ptr<devices::pci::MsiRoute> inner_;
};

}  // namespace

devices::MsiMessage DoorbellMsiRouter::rewrite(const devices::MsiMessage& message) const {
    devices::MsiMessage m = message;
    if (m.address) m.address = doorbell_;
    return m;
}

Result<std::unique_ptr<devices::pci::MsiRoute>> DoorbellMsiRouter::createRoute(const devices::MsiMessage& message,
                                                                               bool masked, const std::string& name) {
    auto inner = TRY(inner_.createRoute(rewrite(message), masked, name));
    return std::unique_ptr<devices::pci::MsiRoute>(std::make_unique<DoorbellRoute>(*this, std::move(inner)));
}

}  // namespace conduit::vmm
