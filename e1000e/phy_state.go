package e1000e

import "fmt"

// PHYState is the PHY registers that exist, keyed "page.reg" in hex
// ("0.00" is BMCR, "2.10" page 2 register 0x10).
type PHYState struct {
	Regs map[string]uint16 `msgpack:"regs"`
}

func phyKey(page, reg int) string { return fmt.Sprintf("%d.%02x", page, reg) }

// savePHY fills a PHYState. Called with n.mu held.
func (n *NIC) savePHY() PHYState {
	s := PHYState{Regs: map[string]uint16{}}
	for page := 0; page < phyPages; page++ {
		for reg := 0; reg < phyRegs; reg++ {
			c := phyCaps[page][reg]
			if c == 0 || (page != 0 && phyCaps[0][reg]&phyCapAnyPage != 0) {
				continue
			}
			s.Regs[phyKey(page, reg)] = n.phy[page][reg]
		}
	}
	return s
}

// parsePHYKey returns the page and register of a key, or false.
func parsePHYKey(k string) (page, reg int, ok bool) {
	if len(k) != 4 || k[1] != '.' {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(k, "%1d.%02x", &page, &reg); err != nil {
		return 0, 0, false
	}
	if page < 0 || page >= phyPages || reg < 0 || reg >= phyRegs || phyCaps[page][reg] == 0 {
		return 0, 0, false
	}
	if page != 0 && phyCaps[0][reg]&phyCapAnyPage != 0 {
		return 0, 0, false
	}
	return page, reg, true
}

// Validate checks a PHYState: known registers, the PHY's identity, and
// no self-clearing command bit left set.
func (s *PHYState) Validate() error {
	for _, k := range sortedKeys(s.Regs) {
		page, reg, ok := parsePHYKey(k)
		if !ok {
			return fmt.Errorf("e1000e: phy: unknown register %q", k)
		}
		v := s.Regs[k]
		switch {
		case page == 0 && reg == phyID1 && v != bmeID1, page == 0 && reg == phyID2 && v != bmeID2:
			return fmt.Errorf("e1000e: phy: identity %s = %#x is not a BME1000", k, v)
		case page == 0 && reg == phyBMCR && v&(bmcrReset|bmcrRestartAN|bmcrReserved) != 0:
			return fmt.Errorf("e1000e: phy: BMCR %#x has self-clearing or reserved bits", v)
		case page == 0 && reg == phyPage && v > 0xFF:
			return fmt.Errorf("e1000e: phy: page select %#x", v)
		}
	}
	return nil
}

// restorePHY applies a validated PHYState over the reset values. Called
// with n.mu held.
func (n *NIC) restorePHY(s *PHYState) {
	n.resetPHY()
	for k, v := range s.Regs {
		page, reg, _ := parsePHYKey(k)
		n.phy[page][reg] = v
	}
}
